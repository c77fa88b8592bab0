//! The on-demand prices shipped with anamo, for instances whose type no Controller manifest
//! (`onDemandPrices`) and no fleet (`budget.pricePerInstanceHour`) prices: Linux list prices in
//! US East (N. Virginia) as AWS published them on <https://aws.amazon.com/ec2/pricing/on-demand/>
//! ([`DEFAULT_PRICES_AS_OF`]). Other regions cost more or less: set `onDemandPrices` for yours.

/// When the shipped prices were read.
pub const DEFAULT_PRICES_AS_OF: &str = "2024-06";
/// The region the shipped prices are for.
pub const DEFAULT_PRICES_REGION: &str = "us-east-1";

/// Instance type → dollars per hour (Linux, on-demand, us-east-1).
pub const DEFAULT_ON_DEMAND: &[(&str, f64)] = &[
    ("c5.large", 0.085),
    ("c5.xlarge", 0.17),
    ("c5.2xlarge", 0.34),
    ("c5.4xlarge", 0.68),
    ("c5.9xlarge", 1.53),
    ("c6a.large", 0.0765),
    ("c6a.xlarge", 0.153),
    ("c6a.2xlarge", 0.306),
    ("c6a.4xlarge", 0.612),
    ("c6i.large", 0.085),
    ("c6i.xlarge", 0.17),
    ("c6i.2xlarge", 0.34),
    ("c6i.4xlarge", 0.68),
    ("c6i.8xlarge", 1.36),
    ("m5.large", 0.096),
    ("m5.xlarge", 0.192),
    ("m5.2xlarge", 0.384),
    ("m5.4xlarge", 0.768),
    ("m6i.large", 0.096),
    ("m6i.xlarge", 0.192),
    ("m6i.2xlarge", 0.384),
    ("m6i.4xlarge", 0.768),
    ("r5.large", 0.126),
    ("r5.xlarge", 0.252),
    ("r5.2xlarge", 0.504),
    ("r5.4xlarge", 1.008),
    ("r6a.2xlarge", 0.4536),
    ("r6i.large", 0.126),
    ("r6i.xlarge", 0.252),
    ("r6i.2xlarge", 0.504),
    ("r6i.4xlarge", 1.008),
    ("r6i.16xlarge", 4.032),
    ("t3.micro", 0.0104),
    ("t3.small", 0.0208),
    ("t3.medium", 0.0416),
    ("t3.large", 0.0832),
];

/// The shipped on-demand price of `instance_type`.
pub(super) fn shipped(instance_type: &str) -> Option<f64> {
    DEFAULT_ON_DEMAND
        .iter()
        .find(|(t, _)| *t == instance_type)
        .map(|(_, p)| *p)
}
