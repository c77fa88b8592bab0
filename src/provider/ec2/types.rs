//! The instance types a fleet launches when its manifest gives requirements
//! (`instanceRequirements`) or derives slots per type (`vcpusPerTask`): EC2's catalogue of
//! types (`DescribeInstanceTypes`, every page) read once and again after
//! [`TYPES_REFRESH`], and resolved by the pure functions of `manifest::requirements`.

use aws_sdk_ec2::types::ArchitectureType;

use super::Ec2Fleet;
use crate::clock::Millis;
use crate::manifest::{TypeInfo, MAX_OVERRIDES};
use crate::provider::aws_error::{from_sdk, with_backoff};
use crate::provider::{ProviderError, ProviderResult};

/// How long the catalogue of instance types is kept before it is read again: EC2 adds types
/// a few times a year and a read is a handful of calls, so an hour keeps a long-running
/// controller current at no noticeable cost.
pub const TYPES_REFRESH: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// `MaxResults` of each `DescribeInstanceTypes` page (the API allows 5..=100).
const PAGE_SIZE: i32 = 100;

/// The catalogue as last read.
#[derive(Debug, Clone)]
pub(super) struct Catalogue {
    read_at: Millis,
    types: Vec<TypeInfo>,
}

impl Ec2Fleet {
    /// Whether the fleet needs EC2's catalogue of instance types.
    fn needs_catalogue(&self) -> bool {
        self.cfg.spec.instance_requirements.is_some() || self.cfg.task_size.is_some()
    }

    /// EC2's instance types, read when not read within [`TYPES_REFRESH`].
    async fn catalogue(&self) -> ProviderResult<Vec<TypeInfo>> {
        let now = self.cfg.clock.now();
        let refresh = crate::clock::ms(TYPES_REFRESH);
        if let Some(c) = self.types_cache().as_ref() {
            if now.saturating_sub(c.read_at) < refresh {
                return Ok(c.types.clone());
            }
        }
        let types = self.describe_instance_types().await?;
        tracing::info!(fleet = %self.cfg.fleet, types = types.len(), "read EC2's instance types");
        *self.types_cache() = Some(Catalogue {
            read_at: now,
            types: types.clone(),
        });
        Ok(types)
    }

    /// Every instance type EC2 offers in the region, all pages.
    async fn describe_instance_types(&self) -> ProviderResult<Vec<TypeInfo>> {
        with_backoff(&self.cfg.throttle, "DescribeInstanceTypes", || async {
            let mut pages = self
                .client
                .describe_instance_types()
                .max_results(PAGE_SIZE)
                .into_paginator()
                .send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| from_sdk("DescribeInstanceTypes", e))?;
                out.extend(page.instance_types().iter().filter_map(|t| {
                    Some(TypeInfo {
                        name: t.instance_type()?.as_str().to_string(),
                        vcpus: u32::try_from(t.v_cpu_info()?.default_v_cpus()?).ok()?,
                        memory_mib: u64::try_from(t.memory_info()?.size_in_mib()?).ok()?,
                        architectures: t
                            .processor_info()
                            .map(|p| {
                                p.supported_architectures()
                                    .iter()
                                    .map(ArchitectureType::as_str)
                                    .map(str::to_string)
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                }));
            }
            Ok(out)
        })
        .await
    }

    /// The instance types the fleet launches: `instanceTypes`, or its requirements resolved
    /// (an error when they match none, or too many for EC2 Fleet with the subnets).
    pub(super) async fn instance_types(&self) -> ProviderResult<Vec<String>> {
        let Some(req) = &self.cfg.spec.instance_requirements else {
            return Ok(self.cfg.spec.instance_types.clone());
        };
        let types = req.resolve(&self.catalogue().await?);
        if types.is_empty() {
            return Err(ProviderError::Config(format!(
                "fleet {}: no instance type EC2 lists meets spec.provider.ec2.\
                 instanceRequirements ({}); widen the ranges or the allowed types",
                self.cfg.fleet,
                req.describe()
            )));
        }
        let subnets = self.cfg.spec.subnets.len().max(1);
        if types.len() * subnets > MAX_OVERRIDES {
            return Err(ProviderError::Config(format!(
                "fleet {}: spec.provider.ec2.instanceRequirements ({}) match {} instance types, \
                 × {subnets} subnets = {} combinations; EC2 Fleet takes at most \
                 {MAX_OVERRIDES}: narrow the ranges or set allowedTypes",
                self.cfg.fleet,
                req.describe(),
                types.len(),
                types.len() * subnets
            )));
        }
        Ok(types)
    }

    /// Reads the catalogue if the fleet needs it and it is due (a failure is logged; the
    /// next listing tries again).
    pub(super) async fn refresh_catalogue(&self) {
        if !self.needs_catalogue() {
            return;
        }
        if let Err(e) = self.catalogue().await {
            tracing::warn!(fleet = %self.cfg.fleet, error = %e, "cannot read EC2's instance types");
        }
    }

    /// With `vcpusPerTask`: the smallest slot count among the fleet's instance types, from
    /// the catalogue as last read (`None` before it was read or when no type is known).
    pub fn derived_slots(&self) -> Option<u32> {
        let size = self.cfg.task_size?;
        let cache = self.types_cache();
        let catalogue = &cache.as_ref()?.types;
        let names = match &self.cfg.spec.instance_requirements {
            Some(req) => req.resolve(catalogue),
            None => self.cfg.spec.instance_types.clone(),
        };
        catalogue
            .iter()
            .filter(|t| names.contains(&t.name))
            .map(|t| size.slots(t.vcpus, t.memory_mib))
            .min()
    }

    /// The slots of an instance of `instance_type` (`vcpusPerTask`), when the catalogue
    /// knows the type.
    pub fn slots_of(&self, instance_type: &str) -> Option<u32> {
        let size = self.cfg.task_size?;
        let cache = self.types_cache();
        let t = cache
            .as_ref()?
            .types
            .iter()
            .find(|t| t.name == instance_type)?;
        Some(size.slots(t.vcpus, t.memory_mib))
    }
}
