//! How-to-fix hints for parse problems: "did you mean `maxInstances`?" for a mistyped field or
//! variant name, and the real lower bound of a number field (read from the JSON schema, so the
//! message, the schema and `anamo manifest schema` agree).

use std::sync::LazyLock;

use serde_json::Value;

/// The schema of manifest documents, built once (only read when a message needs a bound).
static SCHEMA: LazyLock<Value> = LazyLock::new(super::schema);

/// The candidate closest to `unknown` when it looks like a slip of the keyboard (same letters
/// in another case, or a Jaro-Winkler similarity of at least 0.8), else `None`.
pub(crate) fn did_you_mean<'a>(unknown: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = unknown.to_lowercase();
    if let Some(same) = candidates.iter().find(|c| c.to_lowercase() == lower) {
        return Some(same);
    }
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_lowercase()), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The hint for "unknown field `x`, expected one of a, b, c" (and "unknown variant", and
/// "expected `a` or `b`"): the closest allowed name, if one is close.
fn suggestion_for_unknown(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (unknown, rest) = rest.split_once('`')?;
    let (_, list) = rest.split_once("expected ")?;
    let list = list.strip_prefix("one of ").unwrap_or(list);
    let allowed: Vec<&str> = list
        .split(", ")
        .flat_map(|part| part.split(" or "))
        .map(|name| name.trim().trim_matches('`'))
        .filter(|name| !name.is_empty())
        .collect();
    did_you_mean(unknown, &allowed).map(|best| format!("did you mean `{best}`?"))
}

/// The `minimum` the schema gives the field at dotted `path` of a `kind` document
/// (`FleetDocument` or `ControllerDocument`), following `$ref`s and `anyOf`/`oneOf`.
pub(crate) fn schema_minimum(kind: &str, path: &str) -> Option<f64> {
    field_schema(kind, path)?.get("minimum")?.as_f64()
}

/// A value a number field at `path` accepts (its minimum, or 0), to stand in for a value that
/// could not be read so that the rest of the document can still be checked. `None` for
/// fields that are not numbers.
pub(crate) fn number_placeholder(kind: &str, path: &str) -> Option<String> {
    let node = field_schema(kind, path)?;
    let is = |t: &str| match node.get("type") {
        Some(Value::String(s)) => s == t,
        Some(Value::Array(a)) => a.iter().any(|v| v == t),
        _ => false,
    };
    if !(is("integer") || is("number")) {
        return None;
    }
    let min = node.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
    Some(format!("{}", min.max(0.0)))
}

fn field_schema(kind: &str, path: &str) -> Option<&'static Value> {
    let defs = SCHEMA.get("$defs")?;
    let mut node = defs.get(kind)?;
    for part in path.split('.') {
        node = property(defs, node, part)?;
    }
    Some(resolve(defs, node))
}

fn resolve<'a>(defs: &'a Value, node: &'a Value) -> &'a Value {
    match node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
    {
        Some(target) => resolve(defs, target),
        None => node,
    }
}

fn property<'a>(defs: &'a Value, node: &'a Value, name: &str) -> Option<&'a Value> {
    let node = resolve(defs, node);
    if let Some(p) = node.get("properties").and_then(|p| p.get(name)) {
        return Some(p);
    }
    ["anyOf", "oneOf"]
        .iter()
        .filter_map(|k| node.get(*k)?.as_array())
        .flatten()
        .find_map(|alt| property(defs, alt, name))
}

/// serde-saphyr's terse message for the value of `field` (dotted, in a `kind` document), with a
/// how-to-fix hint added.
pub(crate) fn improve_message(message: String, kind: Option<&str>, field: Option<&str>) -> String {
    match message.as_str() {
        "expected mapping start" => {
            return "expected a mapping (`key: value` lines, or `{key: value}`) here".to_string()
        }
        "expected sequence start" => {
            return "expected a list (`- item` lines, or `[a, b]`) here".to_string()
        }
        "invalid floating point" => return "expected a number".to_string(),
        _ => {}
    }
    if let Some(hint) = suggestion_for_unknown(&message) {
        return match message.split_once(", expected") {
            Some((head, allowed)) => format!("{head}; {hint} (expected{allowed})"),
            None => format!("{message}; {hint}"),
        };
    }
    let minimum = || match (kind, field) {
        (Some(kind), Some(field)) => schema_minimum(kind, field),
        _ => None,
    };
    for (ty, unsigned) in [
        ("u8", true),
        ("u16", true),
        ("u32", true),
        ("u64", true),
        ("i32", false),
        ("i64", false),
    ] {
        if message == format!("invalid {ty}") {
            return match minimum().or(unsigned.then_some(0.0)) {
                Some(min) => format!("expected a whole number, {min} or more"),
                None => "expected a whole number".to_string(),
            };
        }
    }
    if message == "invalid f32" || message == "invalid f64" {
        return "expected a number".to_string();
    }
    if message.contains("expected a duration") {
        return format!("{message}; write a duration such as `30s`, `5m` or `1h 30m`");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_are_suggested_and_strangers_are_not() {
        let fields = [
            "minInstances",
            "maxInstances",
            "slotsPerInstance",
            "leaseTTL",
        ];
        assert_eq!(did_you_mean("maxInstance", &fields), Some("maxInstances"));
        assert_eq!(did_you_mean("max_instances", &fields), Some("maxInstances"));
        assert_eq!(did_you_mean("leasettl", &fields), Some("leaseTTL"));
        assert_eq!(did_you_mean("colour", &fields), None);
        for msg in [
            "unknown field `maxInstnaces`, expected one of minInstances, maxInstances, budget",
            "unknown field `maxInstnaces`, expected one of `minInstances`, `maxInstances`",
            "unknown field `maxinstances`, expected `minInstances` or `maxInstances`",
        ] {
            assert_eq!(
                suggestion_for_unknown(msg).as_deref(),
                Some("did you mean `maxInstances`?"),
                "{msg}"
            );
        }
        let far = "unknown variant `gcp`, expected one of local, ec2, autoscaling";
        assert_eq!(suggestion_for_unknown(far), None);
        assert_eq!(suggestion_for_unknown("invalid u32"), None);
    }

    #[test]
    fn bounds_come_from_the_schema() {
        let fleet = "FleetDocument";
        assert_eq!(schema_minimum(fleet, "spec.maxInstances"), Some(1.0));
        assert_eq!(schema_minimum(fleet, "spec.minInstances"), Some(0.0));
        assert_eq!(schema_minimum(fleet, "spec.slotsPerInstance"), Some(1.0));
        assert_eq!(schema_minimum(fleet, "spec.tasksPerInstance"), Some(1.0));
        assert_eq!(schema_minimum(fleet, "spec.maxAttempts"), Some(1.0));
        assert_eq!(schema_minimum(fleet, "spec.nothing"), None);
        let placeholder = |path| number_placeholder(fleet, path);
        assert_eq!(placeholder("spec.maxInstances").as_deref(), Some("1"));
        assert_eq!(placeholder("spec.minInstances").as_deref(), Some("0"));
        assert_eq!(placeholder("spec.tasksPerInstance").as_deref(), Some("1"));
        assert_eq!(placeholder("spec.step"), None);
        assert_eq!(placeholder("spec.leaseTTL"), None);
        let msg = improve_message("invalid u32".into(), Some(fleet), Some("spec.maxInstances"));
        assert_eq!(msg, "expected a whole number, 1 or more");
        let msg = improve_message("invalid u32".into(), Some(fleet), Some("spec.minInstances"));
        assert_eq!(msg, "expected a whole number, 0 or more");
    }
}
