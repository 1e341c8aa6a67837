//! The domain of the shortener, shared by the API and the analytics worker.
//!
//! - [`code`]: the path segment naming a link — [`Code`], and [`Alias`] for
//!   codes users choose.
//! - [`codegen`]: generated codes, unique by construction: leased id blocks
//!   and a keyed bijection (FF1) from ids to codes.
//! - [`region`]: the regions of an active-active deployment, and the part
//!   of the id space each one owns.
//! - [`target`]: [`TargetUrl`], a URL safe to redirect to.
//! - [`link`]: [`Link`], its redirect status, changes, and the token that
//!   lets its owner change it.
//! - [`clicks`]: click events, user-agent classification, and the
//!   aggregation that turns events into counts.
//! - [`stats`]: the statistics a link's owner reads.
//! - [`request`]: what clients send to create and change links and to read
//!   their stats, and how it is checked.
//! - [`storage`]: the [`LinkStore`] port, and (feature `contract-tests`)
//!   the contract every adapter passes.
//!
//! The adapters are the `stores` crate; what both binaries run on
//! (settings, telemetry, signals) is the `runtime` crate. This crate is the
//! domain alone, quick to build: what the fuzz targets (`api/fuzz`) and
//! the load-test tools use. Feature `openapi`: the request types' schemas.
//!
//! Nothing here knows about HTTP; the API converts requests into these
//! types once, at its edge.

pub mod clicks;
pub mod code;
pub mod codegen;
pub mod link;
pub mod region;
pub mod request;
pub mod stats;
pub mod storage;
pub mod target;

pub use code::{Alias, Code, CodeError};
pub use link::{
    ExpiryError, Link, LinkChanges, LinkState, ManageToken, RedirectStatus, TokenDigest,
};
pub use storage::{LinkStore, StoreError, UnwrittenClicks};
pub use target::{HostIdentity, TargetUrl, UrlError, UrlPolicy};
