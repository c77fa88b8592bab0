//! EC2 capacity for moto's `CreateFleet`: an SDK interceptor that makes chosen offerings
//! (instance type, subnet, lifecycle) out of capacity, or caps how many instances one call
//! gets, and answers the way EC2 does for an `instant` fleet (EC2 API reference,
//! `CreateFleet` / `CreateFleetError`): the instances that could be launched, plus one error
//! per override that could not, in the same successful answer.
//!
//! moto 5.2.5 serves `CreateFleet` `instant` (launching on-demand or spot instances with the
//! request's instance tags, all into the first override under `lowest-price`/`price-capacity-
//! optimized`) but never runs out of capacity and never answers errors. So the interceptor
//! removes the out-of-capacity overrides from the request before moto sees it (or sets the
//! target capacity to 0 when none is left, or to the cap), and adds the `CreateFleetError`s to
//! the decoded answer afterwards. The request as the provider sent it is what
//! [`super::moto::SdkFaults`] records.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::config::interceptors::{
    BeforeTransmitInterceptorContextMut, FinalizerInterceptorContextMut,
};
use aws_sdk_ec2::config::{Intercept, RuntimeComponents};
use aws_sdk_ec2::operation::create_fleet::CreateFleetOutput;
use aws_sdk_ec2::types::{
    CreateFleetError, FleetLaunchTemplateOverrides, InstanceLifecycle, InstanceType,
    LaunchTemplateAndOverridesResponse,
};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

use super::moto::request_form;

/// An (instance type, subnet, lifecycle) as the request names it (`spot` / `on-demand`).
pub type Offering = (String, Option<String>, String);

#[derive(Debug, Default)]
struct State {
    out_of_capacity: Vec<Offering>,
    /// Instances one call may launch at most (`None`: as many as asked).
    cap: Option<u32>,
}

/// The capacity EC2 has for `CreateFleet`. Cheap to clone (shared state).
#[derive(Debug, Clone, Default)]
pub struct FleetCapacity {
    state: Arc<Mutex<State>>,
}

/// The errors to add to one answer (kept in the operation's config bag).
#[derive(Debug, Clone)]
struct Pending(Vec<(Offering, &'static str)>);

impl Storable for Pending {
    type Storer = StoreReplace<Self>;
}

impl FleetCapacity {
    /// No capacity for `instance_type` in `subnet` as `lifecycle` until [`Self::restore`].
    pub fn exhaust(&self, instance_type: &str, subnet: Option<&str>, lifecycle: &str) {
        let o = (
            instance_type.to_string(),
            subnet.map(str::to_string),
            lifecycle.to_string(),
        );
        self.state.lock().unwrap().out_of_capacity.push(o);
    }

    /// Capacity everywhere again.
    pub fn restore(&self) {
        let mut s = self.state.lock().unwrap();
        s.out_of_capacity.clear();
        s.cap = None;
    }

    /// At most `n` instances per call; the rest is answered as `InsufficientInstanceCapacity`
    /// of the override launched into.
    pub fn cap(&self, n: u32) {
        self.state.lock().unwrap().cap = Some(n);
    }

    /// Rewrites a `CreateFleet` request; returns the errors its answer must carry.
    fn rewrite(&self, params: &mut BTreeMap<String, String>) -> Vec<(Offering, &'static str)> {
        let state = self.state.lock().unwrap();
        let lifecycle = params
            .get("TargetCapacitySpecification.DefaultTargetCapacityType")
            .cloned()
            .unwrap_or_else(|| "on-demand".into());
        let prefix = "LaunchTemplateConfigs.1.Overrides.";
        let mut overrides: Vec<BTreeMap<String, String>> = Vec::new();
        for n in 1.. {
            let p = format!("{prefix}{n}.");
            let o: BTreeMap<String, String> = params
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(&p)?.to_string(), v.clone())))
                .collect();
            if o.is_empty() {
                break;
            }
            overrides.push(o);
        }
        params.retain(|k, _| !k.starts_with(prefix));
        let offering = |o: &BTreeMap<String, String>| -> Offering {
            (
                o.get("InstanceType").cloned().unwrap_or_default(),
                o.get("SubnetId").cloned(),
                lifecycle.clone(),
            )
        };
        let mut errors = Vec::new();
        let mut kept = Vec::new();
        for o in &overrides {
            if state.out_of_capacity.contains(&offering(o)) {
                errors.push((offering(o), "InsufficientInstanceCapacity"));
            } else {
                kept.push(o.clone());
            }
        }
        let total: u32 = params
            .get("TargetCapacitySpecification.TotalTargetCapacity")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut allowed = if kept.is_empty() { 0 } else { total };
        if let Some(cap) = state.cap.filter(|&c| c < allowed) {
            allowed = cap;
            errors.push((offering(&kept[0]), "InsufficientInstanceCapacity"));
        }
        // moto needs at least one override to read the template from; with none left, the
        // call launches nothing.
        let send = if kept.is_empty() { overrides } else { kept };
        for (i, o) in send.iter().enumerate() {
            for (k, v) in o {
                params.insert(format!("{prefix}{}.{k}", i + 1), v.clone());
            }
        }
        params.insert(
            "TargetCapacitySpecification.TotalTargetCapacity".into(),
            allowed.to_string(),
        );
        errors
    }
}

impl Intercept for FleetCapacity {
    fn name(&self) -> &'static str {
        "FleetCapacity"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let mut params = request_form(request);
        if params.get("Action").map(String::as_str) != Some("CreateFleet") {
            return Ok(());
        }
        let errors = self.rewrite(&mut params);
        let body = encode_form(&params);
        request
            .headers_mut()
            .insert("content-length", body.len().to_string());
        *request.body_mut() = SdkBody::from(body);
        cfg.interceptor_state().store_put(Pending(errors));
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Pending(errors)) = cfg.load::<Pending>().cloned() else {
            return Ok(());
        };
        cfg.interceptor_state().unset::<Pending>();
        let Some(Ok(output)) = context.output_or_error_mut() else {
            return Ok(());
        };
        let Some(out) = output.downcast_mut::<CreateFleetOutput>() else {
            return Ok(());
        };
        let list = out.errors.get_or_insert_with(Vec::new);
        for ((t, subnet, lifecycle), code) in errors {
            let overrides = FleetLaunchTemplateOverrides::builder()
                .instance_type(InstanceType::from(t.as_str()))
                .set_subnet_id(subnet)
                .build();
            list.push(
                CreateFleetError::builder()
                    .launch_template_and_overrides(
                        LaunchTemplateAndOverridesResponse::builder()
                            .overrides(overrides)
                            .build(),
                    )
                    .lifecycle(InstanceLifecycle::from(lifecycle.as_str()))
                    .error_code(code)
                    .error_message("There is no capacity (injected by the test).")
                    .build(),
            );
        }
        Ok(())
    }
}

/// `application/x-www-form-urlencoded` of a map.
fn encode_form(params: &BTreeMap<String, String>) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}
