//! Regions: where a deployment runs active-active, and which part of the id
//! space each one owns.
//!
//! A region is a name, a slot and a datacenter of the shared ScyllaDB
//! cluster. The slot decides the region's ids: every id a region leases is
//! `≡ slot (mod REGION_SLOTS)`, so regions lease from their own counter
//! inside their own datacenter (no cross-region round trip) and never hand
//! out the same id. The code bijection is unchanged, so a code still looks
//! random; whoever holds the code key reads its id back, and the id's
//! residue names its home region.
//!
//! Adding a region later takes a slot no region has used: its ids are
//! disjoint from every existing one by construction, and no code changes.
//! A slot is never reused for another region while its codes live.

use std::{fmt, str::FromStr, sync::Arc};

use crate::{
    code::Code,
    codegen::CodeGenerator,
    link::Link,
    storage::{LinkStore, StoreError},
};

/// How many regions a deployment can ever have. Each region gets
/// 1/`REGION_SLOTS` of every code length: 62⁷/16 ≈ 2.2 × 10¹¹ seven-
/// character codes per region, seven years at 1,000 creates a second,
/// before its codes grow to eight characters.
pub const REGION_SLOTS: u64 = 16;

/// A region's share of the id space: the ids `≡ slot (mod REGION_SLOTS)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionSlot(u8);

impl RegionSlot {
    pub fn new(slot: u64) -> Option<Self> {
        (slot < REGION_SLOTS).then_some(Self(slot as u8))
    }

    /// The slot that owns `id`.
    pub fn of_id(id: u64) -> Self {
        Self((id % REGION_SLOTS) as u8)
    }

    pub fn get(self) -> u64 {
        u64::from(self.0)
    }

    /// The first id of this slot at or after `id`; `None` past `u64::MAX`.
    pub fn first_at_or_after(self, id: u64) -> Option<u64> {
        let residue = id % REGION_SLOTS;
        let ahead = (self.get() + REGION_SLOTS - residue) % REGION_SLOTS;
        id.checked_add(ahead)
    }
}

impl fmt::Display for RegionSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One region of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Its name, as operators and metrics call it (`eu-west-1`).
    pub name: String,
    pub slot: RegionSlot,
    /// Its datacenter in the shared cluster: the region's requests go to
    /// its replicas, and LOCAL_* consistency counts them.
    pub datacenter: String,
}

/// Every region of a deployment, and the one this process runs in.
///
/// Written `"NAME:SLOT:DATACENTER,…"`, e.g. `"eu:0:dc_eu,us:1:dc_us"`:
/// names and slots unique, slots below [`REGION_SLOTS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regions {
    all: Vec<Region>,
    local: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionsError {
    #[error("'{0}' is not NAME:SLOT:DATACENTER")]
    Malformed(String),
    #[error("'{0}': the slot must be a number below {REGION_SLOTS}")]
    Slot(String),
    #[error("'{0}': names and datacenters are letters, digits, '-' and '_'")]
    Name(String),
    #[error("two regions share the {0}")]
    Duplicate(&'static str),
    #[error("the local region '{0}' is not one of the regions")]
    UnknownLocal(String),
    #[error("name at least one region")]
    Empty,
}

fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 48
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl FromStr for Region {
    type Err = RegionsError;

    fn from_str(text: &str) -> Result<Self, RegionsError> {
        let malformed = || RegionsError::Malformed(text.to_owned());
        let mut parts = text.split(':').map(str::trim);
        let (Some(name), Some(slot), Some(datacenter), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        if !is_name(name) || !is_name(datacenter) {
            return Err(RegionsError::Name(text.to_owned()));
        }
        let slot = slot
            .parse()
            .ok()
            .and_then(RegionSlot::new)
            .ok_or_else(|| RegionsError::Slot(text.to_owned()))?;
        Ok(Self {
            name: name.to_owned(),
            slot,
            datacenter: datacenter.to_owned(),
        })
    }
}

impl Regions {
    /// The regions written in `list`, this process running in `local`.
    pub fn parse(list: &str, local: &str) -> Result<Self, RegionsError> {
        let all = list
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(Region::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        if all.is_empty() {
            return Err(RegionsError::Empty);
        }
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if a.name == b.name {
                    return Err(RegionsError::Duplicate("name"));
                }
                if a.slot == b.slot {
                    return Err(RegionsError::Duplicate("slot"));
                }
                if a.datacenter == b.datacenter {
                    return Err(RegionsError::Duplicate("datacenter"));
                }
            }
        }
        let local = all
            .iter()
            .position(|r| r.name == local.trim())
            .ok_or_else(|| RegionsError::UnknownLocal(local.trim().to_owned()))?;
        Ok(Self { all, local })
    }

    /// The region this process runs in.
    pub fn local(&self) -> &Region {
        &self.all[self.local]
    }

    pub fn all(&self) -> &[Region] {
        &self.all
    }

    /// The other regions.
    pub fn remote(&self) -> impl Iterator<Item = &Region> {
        let local = self.local;
        self.all
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != local)
            .map(|(_, r)| r)
    }

    /// The region whose slot owns `id`, if any region has that slot.
    pub fn home_of(&self, id: u64) -> Option<&Region> {
        let slot = RegionSlot::of_id(id);
        self.all.iter().find(|r| r.slot == slot)
    }

    pub fn by_slot(&self, slot: RegionSlot) -> Option<&Region> {
        self.all.iter().find(|r| r.slot == slot)
    }
}

impl fmt::Display for Regions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.all.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}:{}", r.name, r.slot, r.datacenter)?;
        }
        Ok(())
    }
}

/// Finds links: in this region's replicas, and in a deployment of several
/// regions, where a link this region does not have yet may be (one created
/// elsewhere a moment ago) before it is called unknown.
#[derive(Clone)]
pub struct LinkFinder {
    store: Arc<dyn LinkStore>,
    homes: Option<(Arc<CodeGenerator>, Regions)>,
}

impl fmt::Debug for LinkFinder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkFinder")
            .field("regions", &self.homes.as_ref().map(|(_, r)| r.to_string()))
            .finish_non_exhaustive()
    }
}

impl LinkFinder {
    /// A finder for one region: the store alone.
    pub fn local(store: Arc<dyn LinkStore>) -> Self {
        Self { store, homes: None }
    }

    /// A finder for one region of several; `generator` reads a code's home
    /// region back from it.
    pub fn regional(
        store: Arc<dyn LinkStore>,
        generator: Arc<CodeGenerator>,
        regions: Regions,
    ) -> Self {
        Self {
            store,
            homes: Some((generator, regions)),
        }
    }

    /// Whether links may be in other regions.
    pub fn is_regional(&self) -> bool {
        self.homes.is_some()
    }

    /// The region a generated code was made in; `None` for a code no
    /// region generates (an alias may still look like one: its home is
    /// then a guess, which only costs a read).
    pub fn home_of(&self, code: &Code) -> Option<&Region> {
        let (generator, regions) = self.homes.as_ref()?;
        regions.home_of(generator.id(code.as_str())?)
    }

    /// The link with this code at `revision` or later, for a change heard
    /// of that this region's replicas may not have yet: read from the
    /// code's home region and a majority of all replicas. Unavailable if
    /// even they are older (the change is on its way).
    pub async fn find_at_least(&self, code: &Code, revision: u32) -> Result<Link, StoreError> {
        let home = self.home_of(code).map(|home| home.slot);
        match self.store.get_link_elsewhere(code, home).await? {
            Some(link) if link.revision >= revision => Ok(link),
            found => Err(StoreError::Unavailable(
                format!(
                    "{code} changed to revision {revision}, but the freshest copy found is {:?}",
                    found.map(|l| l.revision)
                )
                .into(),
            )),
        }
    }

    /// The link with this code, whatever its state.
    pub async fn find(&self, code: &Code) -> Result<Option<Link>, StoreError> {
        if let Some(link) = self.store.get_link(code).await? {
            return Ok(Some(link));
        }
        let Some((_, regions)) = &self.homes else {
            return Ok(None);
        };
        let home = self
            .home_of(code)
            .filter(|home| home.slot != regions.local().slot)
            .map(|home| home.slot);
        self.store.get_link_elsewhere(code, home).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn regions_parse_and_print_back() {
        let regions = Regions::parse(" eu:0:dc_eu, us:1:dc-us ,ap:7:dc_ap", "us").expect("valid");
        assert_eq!(regions.local().name, "us");
        assert_eq!(regions.local().datacenter, "dc-us");
        assert_eq!(regions.to_string(), "eu:0:dc_eu,us:1:dc-us,ap:7:dc_ap");
        let remote: Vec<_> = regions.remote().map(|r| r.name.as_str()).collect();
        assert_eq!(remote, ["eu", "ap"]);
        assert_eq!(regions.home_of(16 * 9 + 7).map(|r| &*r.name), Some("ap"));
        assert_eq!(regions.home_of(16 * 9 + 3), None);
    }

    #[test]
    fn bad_region_lists_are_refused_with_the_reason() {
        let cases = [
            ("", "eu", RegionsError::Empty),
            ("eu:0", "eu", RegionsError::Malformed("eu:0".into())),
            ("eu:0:a:b", "eu", RegionsError::Malformed("eu:0:a:b".into())),
            ("eu:16:dc", "eu", RegionsError::Slot("eu:16:dc".into())),
            ("eu:-1:dc", "eu", RegionsError::Slot("eu:-1:dc".into())),
            ("e u:0:dc", "e u", RegionsError::Name("e u:0:dc".into())),
            ("eu:0:d'c", "eu", RegionsError::Name("eu:0:d'c".into())),
            ("eu:0:a,eu:1:b", "eu", RegionsError::Duplicate("name")),
            ("eu:0:a,us:0:b", "eu", RegionsError::Duplicate("slot")),
            ("eu:0:a,us:1:a", "eu", RegionsError::Duplicate("datacenter")),
            ("eu:0:a", "us", RegionsError::UnknownLocal("us".into())),
        ];
        for (list, local, expected) in cases {
            assert_eq!(Regions::parse(list, local), Err(expected), "{list:?}");
        }
    }

    proptest! {
        #[test]
        fn the_first_id_of_a_slot_is_the_nearest_one_owned(id in 0..u64::MAX - 16, slot in 0..REGION_SLOTS) {
            let slot = RegionSlot::new(slot).expect("in range");
            let first = slot.first_at_or_after(id).expect("no overflow");
            prop_assert!(first >= id && first - id < REGION_SLOTS);
            prop_assert_eq!(RegionSlot::of_id(first), slot);
        }
    }
}
