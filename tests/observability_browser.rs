//! The status page in a real browser: headless Chromium (Debian's, from
//! `scripts/test-services`) loads `/` of a controller that works through a small workload, and
//! the figures of the rendered DOM must be those of `/api/status` for the same reconcile pass.
//! A screenshot is saved as `target/artifacts/status-page.png`.
//! The page also says how a run ended, shows a rejected manifest, and warns with a stale
//! banner while the controller's passes are stuck (another process holds the SQLite store's
//! write lock) yet its HTTP server still serves the last figures.
//!
//! Without `ANAMO_TEST_CHROMIUM_BIN` the test fails (see `tests/common/services.rs`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use common::browser::chromium;
use common::http::get_json;
use common::observability::{artifacts_dir, Workload};
use common::services::tool;
use common::wait::wait_for;

type Attrs = BTreeMap<String, String>;

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Start tags of an HTML document with their attributes (enough for a serialized DOM).
fn elements(html: &str) -> Vec<(String, Attrs)> {
    let b = html.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        i += off + 1;
        if i >= b.len() || !b[i].is_ascii_alphabetic() {
            continue;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'-') {
            i += 1;
        }
        let tag = html[start..i].to_ascii_lowercase();
        let mut attrs = Attrs::new();
        loop {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= b.len() || b[i] == b'>' || b[i] == b'/' {
                break;
            }
            let n0 = i;
            while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>') {
                i += 1;
            }
            let name = html[n0..i].to_ascii_lowercase();
            let mut value = String::new();
            if i < b.len() && b[i] == b'=' {
                i += 1;
                if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                    let q = b[i];
                    let v0 = i + 1;
                    let end = html[v0..].find(q as char).map_or(b.len(), |k| v0 + k);
                    value = unescape(&html[v0..end]);
                    i = (end + 1).min(b.len());
                } else {
                    let v0 = i;
                    while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                        i += 1;
                    }
                    value = unescape(&html[v0..i]);
                }
            }
            attrs.insert(name, value);
        }
        out.push((tag, attrs));
    }
    out
}

fn with_class<'a>(els: &'a [(String, Attrs)], class: &str) -> Vec<&'a Attrs> {
    els.iter()
        .filter(|(_, a)| {
            a.get("class")
                .is_some_and(|c| c.split_whitespace().any(|x| x == class))
        })
        .map(|(_, a)| a)
        .collect()
}

fn num(a: &Attrs, k: &str) -> String {
    a.get(k)
        .cloned()
        .unwrap_or_else(|| panic!("no {k} in {a:?}"))
}

fn json_num(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else {
                n.as_f64().unwrap().to_string()
            }
        }
        other => panic!("not a number: {other}"),
    }
}

/// Compares the page's figures with the status of the same pass.
fn compare(dom: &str, els: &[(String, Attrs)], st: &Value, actions_seen: &BTreeSet<String>) {
    assert_eq!(with_class(els, "role").len(), 1, "one role badge");
    let (_, ctl) = els
        .iter()
        .find(|(_, a)| a.get("id").is_some_and(|i| i == "controller"))
        .expect("#controller");
    assert_eq!(ctl["data-role"], st["role"].as_str().unwrap());
    assert_eq!(ctl["data-cluster"], st["cluster"].as_str().unwrap());
    assert_eq!(ctl["data-identity"], st["identity"].as_str().unwrap());
    let lr = st["last_reconcile_at"].as_i64().unwrap();
    assert!(
        dom.contains(&anamo::clock::format_millis(lr)),
        "the last reconcile time is not shown"
    );

    // Steps: every figure of every step.
    let steps = with_class(els, "step");
    let want_steps = st["steps"].as_array().unwrap();
    assert_eq!(steps.len(), want_steps.len(), "steps shown");
    for (a, s) in steps.iter().zip(want_steps) {
        let name = s["step"].as_str().unwrap();
        assert_eq!(a["data-step"], name);
        let mut total = 0;
        for k in [
            "waiting",
            "pending",
            "running",
            "succeeded",
            "failed",
            "cancelled",
        ] {
            assert_eq!(num(a, &format!("data-{k}")), json_num(&s[k]), "{name} {k}");
            total += s[k].as_u64().unwrap();
        }
        assert_eq!(num(a, "data-total"), total.to_string(), "{name} total");
        // The page prints the number with JavaScript, the API with serde_json: the shortest
        // representations of one f64 can differ in the last digit.
        let (page, api) = (
            num(a, "data-throughput-per-min").parse::<f64>().unwrap(),
            s["throughput_per_min"].as_f64().unwrap(),
        );
        assert!(
            (page - api).abs() <= 1e-9 * api.abs().max(1.0),
            "{name} throughput: page {page}, API {api}"
        );
        assert_eq!(num(a, "data-eta-ms"), json_num(&s["eta_ms"]), "{name} ETA");
        assert_eq!(
            num(a, "data-oldest-pending-age-ms"),
            json_num(&s["oldest_pending_age_ms"]),
            "{name} oldest pending"
        );
        // The visible text says the same.
        let finished = s["succeeded"].as_u64().unwrap()
            + s["failed"].as_u64().unwrap()
            + s["cancelled"].as_u64().unwrap();
        assert!(
            dom.contains(&format!("{finished} / {total} finished")),
            "{name}: `{finished} / {total} finished` not shown"
        );
        assert!(dom.contains(&format!(
            "<b class=\"throughput\">{:.1}/min</b>",
            s["throughput_per_min"].as_f64().unwrap()
        )));
    }
    // The bar segments of each step carry the same counts.
    let segs = with_class(els, "seg");
    let shown: u64 = segs
        .iter()
        .map(|a| num(a, "data-count").parse::<u64>().unwrap())
        .sum();
    let all: u64 = want_steps
        .iter()
        .map(|s| {
            [
                "waiting",
                "pending",
                "running",
                "succeeded",
                "failed",
                "cancelled",
            ]
            .iter()
            .map(|k| s[*k].as_u64().unwrap())
            .sum::<u64>()
        })
        .sum();
    assert_eq!(shown, all, "bar segments");

    // Fleets.
    let fleets = with_class(els, "fleet");
    let want_fleets = st["fleets"].as_array().unwrap();
    assert_eq!(fleets.len(), want_fleets.len(), "fleets shown");
    for (a, f) in fleets.iter().zip(want_fleets) {
        let name = f["fleet"].as_str().unwrap();
        assert_eq!(a["data-fleet"], name);
        assert_eq!(a["data-step"], f["step"].as_str().unwrap());
        assert_eq!(a["data-provider"], f["provider"].as_str().unwrap());
        for k in ["desired", "actual", "idle"] {
            assert_eq!(num(a, &format!("data-{k}")), json_num(&f[k]), "{name} {k}");
        }
        let s = &f["status"];
        assert_eq!(num(a, "data-busy"), json_num(&s["busy"]), "{name} busy");
        let booting = s["booting"].as_u64().unwrap() + s["launching"].as_u64().unwrap();
        assert_eq!(
            num(a, "data-booting"),
            booting.to_string(),
            "{name} booting"
        );
        assert_eq!(num(a, "data-lost"), json_num(&s["lost"]), "{name} lost");
        let on: Vec<&str> = f["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "True")
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(a["data-conditions"], on.join(","), "{name} conditions");
        assert_eq!(
            a["data-error"],
            f.get("error").is_some_and(|e| !e.is_null()).to_string(),
            "{name} error"
        );
    }
    // Highlighted conditions: one per True condition, each with its message shown.
    let highlighted = with_class(els, "cond-true");
    let true_conditions: Vec<&Value> = want_fleets
        .iter()
        .flat_map(|f| f["conditions"].as_array().unwrap())
        .filter(|c| c["status"] == "True")
        .collect();
    assert_eq!(highlighted.len(), true_conditions.len());
    for c in true_conditions {
        let msg = c["message"].as_str().unwrap();
        if !msg.is_empty() {
            let shown = serialized_text(msg);
            assert!(
                dom.contains(&format!("<span class=\"cond-message\">{shown}</span>")),
                "condition message {msg:?} not shown"
            );
        }
    }

    // Last actions: every row shown is an action the controller reported.
    let rows = with_class(els, "action");
    assert!(rows.len() <= 50);
    for a in &rows {
        let key = format!("{} {} {}", a["data-at"], a["data-fleet"], a["data-action"]);
        assert!(
            actions_seen.contains(&key),
            "action row {key} not in /api/status"
        );
    }
    if !st["recent_actions"].as_array().unwrap().is_empty() {
        assert!(
            !rows.is_empty(),
            "no action rows, but /api/status has actions"
        );
    }
}

/// Text as Chromium serializes a text node (`&`, `<`, `>` and no-break spaces escaped).
fn serialized_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\u{a0}', "&nbsp;")
}

#[test]
fn status_page_in_chromium_shows_what_api_status_says() {
    let Some(chromium_bin) = tool("ANAMO_TEST_CHROMIUM_BIN", "chromium", None) else {
        return;
    };
    let started = std::time::Instant::now();
    let workload = Workload::start(40, 1.0);
    let url = format!("http://{}/", workload.addr);
    let profile = tempfile::tempdir().unwrap();

    // Mid-run: some tasks done, some still to do.
    wait_for("align tasks half way", Duration::from_secs(90), || {
        let c = workload.step_counts("align")?;
        (c["succeeded"] >= 6 && c["pending"] + c["running"] > 0).then_some(())
    });

    let mut compared = false;
    for attempt in 1..=5 {
        // Record every status the controller publishes while Chromium loads the page.
        let seen: Arc<Mutex<BTreeMap<i64, Vec<Value>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (seen, stop, addr) = (seen.clone(), stop.clone(), workload.addr);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let st = get_json(addr, "/api/status");
                    let key = st["last_reconcile_at"].as_i64().unwrap_or(0);
                    seen.lock().unwrap().entry(key).or_default().push(st);
                    std::thread::sleep(Duration::from_millis(50));
                }
                let st = get_json(addr, "/api/status");
                let key = st["last_reconcile_at"].as_i64().unwrap_or(0);
                seen.lock().unwrap().entry(key).or_default().push(st);
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        let dom = chromium(&chromium_bin, profile.path(), &["--dump-dom"], &url);
        stop.store(true, Ordering::SeqCst);
        poller.join().expect("status poller");
        assert!(dom.contains("id=\"steps\""), "not the status page:\n{dom}");
        let els = elements(&dom);
        let (_, ctl) = els
            .iter()
            .find(|(_, a)| a.get("id").is_some_and(|i| i == "controller"))
            .expect("#controller in the DOM");
        let key: i64 = ctl["data-last-reconcile-at"]
            .parse()
            .expect("a reconcile time");
        let seen = seen.lock().unwrap();
        let Some(snapshots) = seen.get(&key) else {
            eprintln!("attempt {attempt}: pass {key} not seen by the poller; again");
            continue;
        };
        let actions: BTreeSet<String> = seen
            .values()
            .flatten()
            .flat_map(|st| st["recent_actions"].as_array().cloned().unwrap_or_default())
            .map(|a| {
                format!(
                    "{} {} {}",
                    a["at"],
                    a["fleet"].as_str().unwrap(),
                    a["action"].as_str().unwrap()
                )
            })
            .collect();
        // Every snapshot of one pass has the same fleets; the step counts run beside the
        // passes, so compare with the snapshots of the counts the page shows.
        let counted: Vec<String> = with_class(&els, "step")
            .iter()
            .map(|a| num(a, "data-counted-at"))
            .collect();
        let snapshots: Vec<&Value> = snapshots
            .iter()
            .filter(|st| {
                let steps = st["steps"].as_array().cloned().unwrap_or_default();
                steps
                    .iter()
                    .map(|s| json_num(&s["counted_at"]))
                    .collect::<Vec<_>>()
                    == counted
            })
            .collect();
        if snapshots.is_empty() {
            eprintln!("attempt {attempt}: the page's counts not seen by the poller; again");
            continue;
        }
        for st in &snapshots {
            compare(&dom, &els, st, &actions);
        }
        println!(
            "attempt {attempt}: the page matches /api/status of pass {key} ({} snapshots; {} steps, {} fleets, {} action rows)",
            snapshots.len(),
            with_class(&els, "step").len(),
            with_class(&els, "fleet").len(),
            with_class(&els, "action").len()
        );
        compared = true;
        break;
    }
    assert!(
        compared,
        "never caught the page and /api/status of the same pass"
    );

    // A screenshot for people to look at.
    let shot = artifacts_dir().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &chromium_bin,
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
        ],
        &url,
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "suspiciously small screenshot: {} bytes",
        png.len()
    );
    println!(
        "screenshot: {} ({} bytes); done in {:.1}s",
        shot.display(),
        png.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn status_page_in_chromium_says_how_a_run_ended_and_shows_a_rejected_manifest() {
    let Some(chromium_bin) = tool("ANAMO_TEST_CHROMIUM_BIN", "chromium", None) else {
        return;
    };
    // 10 align tasks (S010 fails) and 10 call tasks (S010's fails on its dependency); the
    // cluster has the default name.
    let workload = Workload::start(10, 0.1);
    let url = format!("http://{}/", workload.addr);
    let profile = tempfile::tempdir().unwrap();
    wait_for(
        "every task counted as finished",
        Duration::from_secs(120),
        || {
            ["align", "call"]
                .iter()
                .all(|s| {
                    workload.step_counts(s).is_some_and(|c| {
                        c["waiting"] + c["pending"] + c["running"] == 0 && c["failed"] == 1
                    })
                })
                .then_some(())
        },
    );
    let file = workload.dir.path().join("manifests/fleets.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replacen("maxInstances: 2", "maxInstances: two", 1),
    )
    .unwrap();
    wait_for(
        "the rejection in /api/status",
        Duration::from_secs(60),
        || {
            workload.status()["manifest_error"]
                .as_str()
                .map(str::to_string)
        },
    );

    let dom = chromium(&chromium_bin, profile.path(), &["--dump-dom"], &url);
    assert!(dom.contains("<title>anamo</title>"), "{dom}");
    assert!(
        dom.contains("<h1>anamo</h1>"),
        "the default cluster named twice:\n{dom}"
    );
    for step in ["align", "call"] {
        let start = dom
            .find(&format!("data-step=\"{step}\""))
            .unwrap_or_else(|| panic!("no step {step}:\n{dom}"));
        let card = &dom[start..start + dom[start..].find("</p>").unwrap()];
        assert!(card.contains("10 / 10 finished, 1 failed"), "{card}");
        assert!(
            card.contains("<b class=\"eta\">finished, 1 failed</b>"),
            "{card}"
        );
        assert!(!card.contains("(100%)"), "{card}");
    }
    let els = elements(&dom);
    let banner = els
        .iter()
        .find(|(_, a)| a.get("id").is_some_and(|i| i == "manifest-error"))
        .map(|_| &dom[dom.find("id=\"manifest-error\"").unwrap()..])
        .expect("a manifest-error banner");
    let banner = &banner[..banner.find("</p>").unwrap()];
    assert!(
        banner.contains("last good manifests stay in force"),
        "{banner}"
    );
    assert!(banner.contains("fleets.yaml"), "{banner}");
    assert!(banner.contains("maxInstances"), "{banner}");
}

/// The `<p id="{id}" ...>...</p>` banner of a serialized DOM, if shown.
fn banner<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let rest = &dom[dom.find(&format!("<p id=\"{id}\""))?..];
    Some(&rest[..rest.find("</p>").map_or(rest.len(), |e| e + 4)])
}

#[test]
fn status_page_in_chromium_warns_while_the_controller_passes_are_stuck() {
    let Some(chromium_bin) = tool("ANAMO_TEST_CHROMIUM_BIN", "chromium", None) else {
        return;
    };
    // Passes every second; every pass writes its status documents to the SQLite store.
    let workload = Workload::start(4, 0.5);
    let url = format!("http://{}/", workload.addr);
    let profile = tempfile::tempdir().unwrap();
    let page = || {
        let dom = chromium(&chromium_bin, profile.path(), &["--dump-dom"], &url);
        assert!(
            dom.contains("id=\"controller\""),
            "not the status page:\n{dom}"
        );
        dom
    };
    wait_for("a leader's page", Duration::from_secs(60), || {
        let dom = page();
        (dom.contains("data-role=\"leader\"") && banner(&dom, "stale").is_none()).then_some(())
    });

    // Another process holds the store's write lock: the controller's passes wait for it (its
    // busy timeout is 30 s) while its HTTP server keeps serving the last figures.
    let db = rusqlite::Connection::open(workload.dir.path().join("a.db")).expect("open a.db");
    db.busy_timeout(Duration::from_secs(30)).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").expect("lock the store");
    let stale = wait_for("the stale banner", Duration::from_secs(90), || {
        banner(&page(), "stale").map(str::to_string)
    });
    assert!(
        stale.contains("Stale: the last reconcile pass was"),
        "{stale}"
    );
    assert!(stale.contains("more than 3 intervals of 1s ago"), "{stale}");
    assert!(stale.contains("Check its log."), "{stale}");

    // The lock released, the next pass publishes and the banner goes away.
    db.execute_batch("ROLLBACK").expect("unlock the store");
    drop(db);
    wait_for("the stale banner gone", Duration::from_secs(120), || {
        let dom = page();
        (dom.contains("data-role=\"leader\"") && banner(&dom, "stale").is_none()).then_some(())
    });
}
