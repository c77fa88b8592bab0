//! Test harness for the `ec2` and `autoscaling` providers on a moto server started by
//! `scripts/test-services`, and an SDK interceptor that records every request and can make
//! chosen requests fail with an AWS error code.
//!
//! Measured on moto 5.2.5 (what the tests can and cannot rely on):
//! * `RunInstances` ignores `ClientToken`: the same call twice launches twice;
//! * with `MinCount < MaxCount` it launches `MinCount` instances;
//! * it does not check instance types (any name launches) and never reports missing capacity;
//! * `TerminateInstances` naming an unknown id fails as a whole with
//!   `InvalidInstanceID.NotFound`; naming an already terminated instance succeeds;
//! * an unknown launch template *name* is `InvalidLaunchTemplateName.NotFoundException`, an
//!   unknown template *id* is an HTTP 500 without an error code;
//! * Auto Scaling: `SetDesiredCapacity` above `MaxSize` is accepted (AWS rejects it), and
//!   `TerminateInstanceInAutoScalingGroup` of an instance not in the group, or
//!   `SetDesiredCapacity` of an unknown group, is an HTTP 500.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_sdk_ec2::config::{Credentials, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

/// An AMI that moto ships.
pub const MOTO_AMI: &str = "ami-12c6146b";

/// Endpoint of the moto server started by `scripts/test-services`: a test fails when it is
/// missing or does not answer (see [`super::services`] for the explicit local opt-out).
pub fn moto_endpoint() -> Option<String> {
    super::services::endpoint(
        "ANAMO_TEST_MOTO_ENDPOINT",
        "moto (the EC2/Auto Scaling stand-in)",
    )
}

/// SDK configuration for moto: dummy credentials, us-east-1, and no SDK retries (the
/// providers' own backoff is what the tests count).
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "anamo-tests"))
        .retry_config(RetryConfig::disabled())
        .load()
        .await
}

/// A fresh bucket on moto's S3 at `endpoint`, and a client for it (addressed by path).
pub async fn s3_bucket(endpoint: &str) -> (aws_sdk_s3::Client, String) {
    let s3 = anamo::aws_client::s3_client_from(&sdk_config(endpoint).await, true);
    let name = format!(
        "anamo-logs-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    s3.create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("create a bucket on moto");
    (s3, name)
}

/// Clients for moto sharing one recording interceptor.
pub struct Moto {
    pub ec2: aws_sdk_ec2::Client,
    pub asg: aws_sdk_autoscaling::Client,
    pub faults: SdkFaults,
}

impl Moto {
    /// `None` only when the tests were deliberately allowed to skip and moto is missing.
    pub async fn connect() -> Option<Moto> {
        let endpoint = moto_endpoint()?;
        Some(Moto::clients(&endpoint, |b| b).await)
    }

    /// Clients for moto at `endpoint` sharing one recording interceptor; `ec2` may add more to
    /// the EC2 client's configuration (e.g. an interceptor).
    pub async fn clients(
        endpoint: &str,
        ec2: impl FnOnce(aws_sdk_ec2::config::Builder) -> aws_sdk_ec2::config::Builder,
    ) -> Moto {
        let conf = sdk_config(endpoint).await;
        let faults = SdkFaults::default();
        let ec2 = aws_sdk_ec2::Client::from_conf(
            ec2(aws_sdk_ec2::config::Builder::from(&conf).interceptor(faults.clone())).build(),
        );
        let asg = aws_sdk_autoscaling::Client::from_conf(
            aws_sdk_autoscaling::config::Builder::from(&conf)
                .interceptor(faults.clone())
                .build(),
        );
        Moto { ec2, asg, faults }
    }

    /// The ids of `n` of moto's default subnets (it creates one per zone of the region).
    pub async fn default_subnets(&self, n: usize) -> Vec<String> {
        let subnets: Vec<String> = self
            .ec2
            .describe_subnets()
            .send()
            .await
            .unwrap()
            .subnets()
            .iter()
            .filter_map(|n| n.subnet_id().map(str::to_string))
            .take(n)
            .collect();
        assert_eq!(subnets.len(), n, "moto has default subnets");
        subnets
    }

    /// Creates a launch template (moto AMI, t3.micro); returns its id.
    pub async fn launch_template(&self, name: &str) -> String {
        let out = self
            .ec2
            .create_launch_template()
            .launch_template_name(name)
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(MOTO_AMI)
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .build(),
            )
            .send()
            .await
            .expect("create launch template in moto");
        out.launch_template()
            .and_then(|t| t.launch_template_id())
            .expect("launch template id")
            .to_string()
    }

    /// An instance as EC2 describes it (none when EC2 does not know it).
    async fn describe_instance(&self, id: &str) -> Vec<aws_sdk_ec2::types::Instance> {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .expect("describe instance");
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .cloned()
            .collect()
    }

    /// Tags of an instance, as EC2 reports them.
    pub async fn instance_tags(&self, id: &str) -> BTreeMap<String, String> {
        self.describe_instance(id)
            .await
            .iter()
            .flat_map(|i| i.tags())
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect()
    }

    /// EC2's state name of an instance (`running`, `terminated`, ...).
    pub async fn instance_state(&self, id: &str) -> String {
        self.describe_instance(id)
            .await
            .iter()
            .find_map(|i| i.state()?.name().map(|n| n.as_str().to_string()))
            .unwrap_or_default()
    }

    /// The decoded user data of an instance.
    pub async fn user_data(&self, id: &str) -> Option<String> {
        let out = self
            .ec2
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .expect("describe instance attribute userData");
        let b64 = out.user_data()?.value()?.to_string();
        let bytes = aws_smithy_types::base64::decode(&b64).expect("user data is base64");
        Some(String::from_utf8(bytes).expect("user data is UTF-8"))
    }

    /// Auto Scaling group `name`: (desired capacity, instance id → protected from scale-in)
    /// as the API reports them.
    pub async fn describe_group(&self, name: &str) -> (i32, BTreeMap<String, bool>) {
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .unwrap();
        let g = &out.auto_scaling_groups()[0];
        let members = g
            .instances()
            .iter()
            .map(|i| {
                (
                    i.instance_id().unwrap().to_string(),
                    i.protected_from_scale_in().unwrap_or(false),
                )
            })
            .collect();
        (g.desired_capacity().unwrap(), members)
    }
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

// ---- the interceptor -----------------------------------------------------------------------

/// One request as it was sent (before any fault rewrote it).
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The `Action` parameter (`RunInstances`).
    pub action: String,
    /// The decoded form parameters (`ClientToken`, `TagSpecification.1.Tag.1.Key`, ...).
    pub params: BTreeMap<String, String>,
    /// The error code injected for this request, if one was.
    pub injected: Option<String>,
}

impl Recorded {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// A planned failure.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Requests of this action are affected.
    pub action: String,
    /// Only those with this parameter value (e.g. `InstanceType` = `c6i.large`).
    pub when: Option<(String, String)>,
    /// How many more requests fail.
    pub times: usize,
    /// AWS error code and HTTP status of the answer.
    pub code: String,
    pub status: u16,
    /// false: the request never reaches moto (a rejected call: throttling, no capacity);
    /// true: moto executes it and only the answer is replaced (a lost response).
    pub executed: bool,
}

impl Fault {
    /// `times` requests of `action` are answered with `code` (HTTP 400) without being executed.
    pub fn new(action: &str, code: &str, times: usize) -> Fault {
        Fault {
            action: action.into(),
            when: None,
            times,
            code: code.into(),
            status: 400,
            executed: false,
        }
    }

    pub fn when(mut self, param: &str, value: &str) -> Fault {
        self.when = Some((param.into(), value.into()));
        self
    }

    /// The request is executed by moto, then its answer replaced by this error.
    pub fn after_execution(mut self, status: u16) -> Fault {
        self.executed = true;
        self.status = status;
        self
    }
}

#[derive(Debug, Default)]
struct FaultState {
    requests: Vec<Recorded>,
    faults: Vec<Fault>,
}

/// Records every request and injects [`Fault`]s. Cheap to clone (shared state).
#[derive(Debug, Clone, Default)]
pub struct SdkFaults {
    state: Arc<Mutex<FaultState>>,
}

/// Marks an operation whose answer is to be replaced (kept in the operation's config bag).
#[derive(Debug, Clone)]
struct Injected {
    code: String,
    status: u16,
    autoscaling: bool,
}

impl Storable for Injected {
    type Storer = StoreReplace<Self>;
}

impl SdkFaults {
    pub fn inject(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push(fault);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The requests of one action.
    pub fn requests_of(&self, action: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.action == action)
            .collect()
    }

    /// Launches `req` again with no fault left: its batch is found by its tag, so `provider`
    /// answers its `n` instances without sending `action` (`RunInstances`, `CreateFleet`)
    /// and lists `n`. The answer.
    pub async fn relaunch_finds_the_batch(
        &self,
        provider: &dyn anamo::provider::FleetProvider,
        req: &anamo::provider::LaunchRequest,
        action: &str,
        n: usize,
    ) -> anamo::provider::LaunchOutcome {
        self.clear();
        let out = provider.launch(req).await.unwrap();
        assert_eq!(out.instances.len(), n, "{out:?}");
        assert!(self.requests_of(action).is_empty(), "no {action} sent");
        assert_eq!(provider.list().await.unwrap().len(), n);
        out
    }

    pub fn clear(&self) {
        let mut s = self.state.lock().unwrap();
        s.requests.clear();
        s.faults.clear();
    }
}

impl Intercept for SdkFaults {
    fn name(&self) -> &'static str {
        "SdkFaults"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let params = request_form(request);
        let action = params.get("Action").cloned().unwrap_or_default();
        let autoscaling = params.get("Version").map(String::as_str) == Some("2011-01-01");
        let mut state = self.state.lock().unwrap();
        let fault = state.faults.iter_mut().find(|f| {
            f.times > 0
                && f.action == action
                && f.when
                    .as_ref()
                    .is_none_or(|(k, v)| params.get(k) == Some(v))
        });
        let injected = fault.map(|f| {
            f.times -= 1;
            f.clone()
        });
        state.requests.push(Recorded {
            action,
            params,
            injected: injected.as_ref().map(|f| f.code.clone()),
        });
        drop(state);
        if let Some(f) = injected {
            if !f.executed {
                // Send moto something harmless instead; the answer is replaced below.
                let harmless = if autoscaling {
                    "Action=DescribeAutoScalingGroups&Version=2011-01-01"
                } else {
                    "Action=DescribeRegions&Version=2016-11-15"
                };
                *request.body_mut() = SdkBody::from(harmless);
                request
                    .headers_mut()
                    .insert("content-length", harmless.len().to_string());
            }
            cfg.interceptor_state().store_put(Injected {
                code: f.code,
                status: f.status,
                autoscaling,
            });
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(injected) = cfg.load::<Injected>().cloned() else {
            return Ok(());
        };
        cfg.interceptor_state().unset::<Injected>();
        let body = if injected.autoscaling {
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{}</Code>\
                 <Message>injected by the test</Message></Error>\
                 <RequestId>injected</RequestId></ErrorResponse>",
                injected.code
            )
        } else {
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
                 <Code>{}</Code><Message>injected by the test</Message></Error></Errors>\
                 <RequestID>injected</RequestID></Response>",
                injected.code
            )
        };
        let response = context.response_mut();
        *response.status_mut() = StatusCode::try_from(injected.status)?;
        response
            .headers_mut()
            .insert("content-length", body.len().to_string());
        response.headers_mut().insert("content-type", "text/xml");
        *response.body_mut() = SdkBody::from(body);
        Ok(())
    }
}

/// `application/x-www-form-urlencoded` into a map.
/// The form parameters of an EC2/Auto Scaling query request's body.
pub fn request_form(request: &aws_smithy_runtime_api::http::Request) -> BTreeMap<String, String> {
    let body = request
        .body()
        .bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    parse_form(&body)
}

pub fn parse_form(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
