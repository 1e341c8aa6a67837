//! How the production store connects ([`ScyllaOptions`]), and the
//! `storage.scylla` section of the configuration that makes them, shared by
//! `shortener-api` and `shortener-worker` so one file (or one set of
//! `SHORTENER__STORAGE__SCYLLA__*` variables) configures both.

use std::{fmt, str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Consistency, check_keyspace_name};
use links::region::Regions;
use runtime::settings::{self, InvalidKey, invalid};

/// How the production store connects.
#[derive(Debug, Clone)]
pub struct ScyllaOptions {
    /// Contact points, `host:port`; the driver discovers the rest.
    pub nodes: Vec<String>,
    /// The datacenter this instance runs in: requests go to its replicas.
    /// Empty: no preference (one datacenter).
    pub local_dc: String,
    /// Keyspace holding the tables.
    pub keyspace: String,
    /// Replicas per datacenter, for `NetworkTopologyStrategy`, used when
    /// [`migrate`](super::migrate) creates the keyspace.
    pub replication: Vec<(String, u32)>,
    /// Consistency of reads and writes (LOCAL_QUORUM by default).
    pub consistency: Consistency,
    /// Consistency of generated creates, when not `consistency`: EACH_QUORUM
    /// makes an acknowledged create survive the loss of its region.
    pub create_consistency: Option<Consistency>,
    /// The regions of an active-active deployment, one datacenter each, and
    /// the one this instance runs in; `None`: one region.
    pub regions: Option<Regions>,
    /// Longest wait for one request, retries included.
    pub request_timeout: Duration,
    /// Longest wait for a connection to a node.
    pub connect_timeout: Duration,
    /// After this long without an answer, an idempotent request is also sent
    /// to the next replica. `None`: never.
    pub speculative_after: Option<Duration>,
    /// Credentials, if the cluster requires them.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Requests in flight or waiting, at most; beyond, calls fail as
    /// unavailable rather than queue without bound.
    pub max_in_flight: usize,
    /// How long expired or deleted links keep answering 410.
    pub retention: chrono::Duration,
    /// Which click counts the stats API reads.
    pub click_counts: ClickCounts,
}

/// Where a deployment's click counts are: which pipeline writes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClickCounts {
    /// Counter tables, incremented by the API's in-process pipeline.
    #[default]
    Counters,
    /// The ledger tables of `shortener-worker`: exact, from Kafka.
    Ledger,
}

/// Consistency levels offered for reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsistencySetting {
    LocalQuorum,
    Quorum,
    EachQuorum,
    LocalOne,
    One,
    All,
}

impl From<ConsistencySetting> for Consistency {
    fn from(c: ConsistencySetting) -> Self {
        match c {
            ConsistencySetting::LocalQuorum => Consistency::LocalQuorum,
            ConsistencySetting::Quorum => Consistency::Quorum,
            ConsistencySetting::EachQuorum => Consistency::EachQuorum,
            ConsistencySetting::LocalOne => Consistency::LocalOne,
            ConsistencySetting::One => Consistency::One,
            ConsistencySetting::All => Consistency::All,
        }
    }
}

/// `storage.scylla.create_consistency`: what acknowledges a generated
/// create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateConsistency {
    /// A majority of the local datacenter: no cross-region round trip; a
    /// create acknowledged just before its region is destroyed can be lost.
    LocalQuorum,
    /// A majority of every datacenter: a round trip to the farthest region;
    /// nothing acknowledged is lost with one region.
    EachQuorum,
}

impl FromStr for CreateConsistency {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "local_quorum" => Ok(Self::LocalQuorum),
            "each_quorum" => Ok(Self::EachQuorum),
            other => Err(format!(
                "'{other}': must be local_quorum or each_quorum (or empty: `consistency`)"
            )),
        }
    }
}

impl From<CreateConsistency> for Consistency {
    fn from(c: CreateConsistency) -> Self {
        match c {
            CreateConsistency::LocalQuorum => Consistency::LocalQuorum,
            CreateConsistency::EachQuorum => Consistency::EachQuorum,
        }
    }
}

/// `region.*`, shared by both binaries: the deployment's regions, if it
/// runs in more than one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "RawRegionSettings")]
pub struct RegionSettings(Option<Regions>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegionSettings {
    name: String,
    all: String,
}

impl TryFrom<RawRegionSettings> for RegionSettings {
    type Error = String;

    fn try_from(raw: RawRegionSettings) -> Result<Self, String> {
        match (raw.name.trim().is_empty(), raw.all.trim().is_empty()) {
            (true, true) => Ok(Self(None)),
            (false, false) => Regions::parse(&raw.all, &raw.name)
                .map(|r| Self(Some(r)))
                .map_err(|e| format!("region.all: {e}")),
            _ => Err("region.name and region.all go together: set both or neither".into()),
        }
    }
}

impl RegionSettings {
    pub fn regions(&self) -> Option<&Regions> {
        self.0.as_ref()
    }

    /// The name metrics and logs give this instance's region: "" for a
    /// deployment of one region.
    pub fn name(&self) -> &str {
        self.0.as_ref().map_or("", |r| r.local().name.as_str())
    }
}

/// Replicas per datacenter for `NetworkTopologyStrategy`, written
/// `"dc1:3,dc2:3"`: at least one datacenter, 1 to 9 replicas each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication(Vec<(String, u32)>);

impl Replication {
    /// (datacenter, replicas) pairs, in the order written.
    pub fn datacenters(&self) -> &[(String, u32)] {
        &self.0
    }
}

impl FromStr for Replication {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let pairs = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                let (dc, n) = part
                    .split_once(':')
                    .ok_or_else(|| format!("'{part}' is not DATACENTER:REPLICAS"))?;
                let n: u32 = n
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=9).contains(n))
                    .ok_or_else(|| format!("'{part}': replicas must be 1 to 9"))?;
                let dc = dc.trim();
                if dc.is_empty() || dc.contains(['\'', '"']) {
                    return Err(format!("'{part}': bad datacenter name"));
                }
                Ok((dc.to_owned(), n))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if pairs.is_empty() {
            return Err("name at least one datacenter".into());
        }
        Ok(Self(pairs))
    }
}

impl fmt::Display for Replication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (dc, n)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{dc}:{n}")?;
        }
        Ok(())
    }
}

/// `storage.scylla.*`, as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScyllaSettings {
    pub nodes: Vec<String>,
    pub local_dc: String,
    pub keyspace: String,
    #[serde(deserialize_with = "settings::parsed")]
    pub replication: Replication,
    pub consistency: ConsistencySetting,
    #[serde(deserialize_with = "settings::optional")]
    pub create_consistency: Option<CreateConsistency>,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub speculative_after: Duration,
    pub username: String,
    pub password: SecretString,
    pub max_in_flight: usize,
    pub migrate_on_start: bool,
}

impl ScyllaSettings {
    /// Checks every key.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        if self.nodes.iter().all(|n| n.trim().is_empty()) {
            return Err(invalid("storage.scylla.nodes", "name at least one node"));
        }
        check_keyspace_name(&self.keyspace)
            .map_err(|e| invalid("storage.scylla.keyspace", e.to_string()))?;
        if self.request_timeout.is_zero() {
            return Err(invalid(
                "storage.scylla.request_timeout",
                "must be longer than zero",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(invalid(
                "storage.scylla.max_in_flight",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Checks this section against the deployment's regions: the local
    /// datacenter is the region's, and the keyspace has replicas in every
    /// region's datacenter.
    pub fn validate_regions(&self, regions: &RegionSettings) -> Result<(), InvalidKey> {
        let Some(regions) = regions.regions() else {
            return Ok(());
        };
        let local = regions.local();
        if !self.local_dc.is_empty() && self.local_dc != local.datacenter {
            return Err(invalid(
                "storage.scylla.local_dc",
                format!(
                    "is '{}', but region {} is in datacenter '{}' (leave it empty to follow the region)",
                    self.local_dc, local.name, local.datacenter
                ),
            ));
        }
        let replicated = self.replication.datacenters();
        if let Some(missing) = regions
            .all()
            .iter()
            .find(|r| !replicated.iter().any(|(dc, _)| *dc == r.datacenter))
        {
            return Err(invalid(
                "storage.scylla.replication",
                format!(
                    "names no replicas in datacenter '{}' of region {}",
                    missing.datacenter, missing.name
                ),
            ));
        }
        Ok(())
    }

    /// The options to connect with; `retention`, `click_counts` and the
    /// regions come from outside this section.
    pub fn options(
        &self,
        retention: Duration,
        click_counts: ClickCounts,
        regions: &RegionSettings,
    ) -> ScyllaOptions {
        let password = self.password.expose_secret();
        let regions = regions.regions().cloned();
        let local_dc = match &regions {
            Some(regions) => regions.local().datacenter.clone(),
            None => self.local_dc.clone(),
        };
        ScyllaOptions {
            nodes: self.nodes.iter().map(|n| n.trim().to_owned()).collect(),
            local_dc,
            keyspace: self.keyspace.clone(),
            replication: self.replication.datacenters().to_vec(),
            consistency: self.consistency.into(),
            create_consistency: self.create_consistency.map(Consistency::from),
            regions,
            request_timeout: self.request_timeout,
            connect_timeout: self.connect_timeout,
            speculative_after: Some(self.speculative_after).filter(|d| !d.is_zero()),
            username: Some(self.username.clone()).filter(|u| !u.is_empty()),
            password: Some(password.to_owned()).filter(|p| !p.is_empty()),
            max_in_flight: self.max_in_flight,
            retention: chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX),
            click_counts,
        }
    }
}
