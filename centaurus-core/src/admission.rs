//! Admission: checks of an object against the others in the store, which a kind's own
//! validation cannot make (a subnet inside its VPC, a VNI unique in the region), and
//! defaults that depend on them. The API server runs the admitters of a kind before it
//! writes, holding the admitter's guard until the write is done, so two racing writes
//! are checked one after the other.

use async_trait::async_trait;
use serde_json::Value;

use crate::model::FieldError;
use crate::store::Store;

/// Held until the admitted write is done; `None` when the admitter needs no ordering.
pub type AdmitGuard = Option<tokio::sync::OwnedMutexGuard<()>>;

/// Checks (and may complete) objects of some kinds before they are written.
#[async_trait]
pub trait Admission: Send + Sync + 'static {
    /// True for the kinds (by API group and plural) this admitter checks.
    fn handles(&self, group: &str, plural: &str) -> bool;

    /// Checks `obj`, about to be created (`old` is `None`) or to replace `old`. May fill
    /// fields in. Errors name the offending fields.
    async fn admit(
        &self,
        store: &dyn Store,
        plural: &str,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<AdmitGuard, Vec<FieldError>>;
}
