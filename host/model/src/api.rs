//! Bodies of the operator API (`/v1/admin/...`, docs/admin-api.md) that the gateway serves
//! and `tapedeck admin` sends and reads: one declaration for both, so a field the server
//! adds is a field the CLI's compiler asks about (a request the CLI builds is a struct
//! literal, not a JSON object that can quietly miss a key).

use serde::{Deserialize, Serialize};

use crate::canary::Sticky;
use crate::tenant::TenantLimits;

/// A tenant as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantView {
    pub name: String,
    /// Anyone may register an account.
    pub self_register: bool,
    /// Its admins may publish and activate components for it.
    pub allow_plugins: bool,
    /// The tenant's own limits.
    pub limits: TenantLimits,
    /// Its limits over the server's defaults: what applies.
    pub effective: TenantLimits,
    /// Being deleted (its data goes in the background).
    pub deleting: bool,
}

/// `{"tenant": ...}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantEnvelope {
    pub tenant: TenantView,
}

/// `{"tenants": [...]}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantList {
    pub tenants: Vec<TenantView>,
}

/// The body of `POST /v1/admin/tenants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// 1 to 64 of `a-z`, `0-9`, `-`, `_`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9_-]{1,64}$"))]
    pub name: String,
    #[serde(default)]
    pub self_register: bool,
    #[serde(default, skip_serializing_if = "TenantLimits::is_empty")]
    pub limits: TenantLimits,
}

/// The body of `PATCH /v1/admin/tenants/{t}`: the switches to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantChange {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub self_register: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub allow_plugins: Option<bool>,
}

/// `{"deleting": name}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deleting {
    /// The tenant being deleted.
    pub deleting: String,
}

/// A tenant's limits: its own, the server's defaults, and what applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitsView {
    pub limits: TenantLimits,
    pub server: TenantLimits,
    pub effective: TenantLimits,
}

/// A user's role: `admin` sees and manages the whole tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

/// An account (never its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    pub id: String,
    pub email: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Role))]
    pub role: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// `{"user": ...}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserEnvelope {
    pub user: UserView,
}

/// `POST /v1/admin/plugins/{digest}/canary`: the body names the scope and the share;
/// thresholds not given keep their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CanaryRequest {
    /// `converter` (the stage whose runs the analysis can judge).
    #[cfg_attr(feature = "openapi", schema(pattern = "^converter$"))]
    pub stage: String,
    /// For this tenant's jobs only (absent or `null`: everyone's).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9_-]{1,64}$"))]
    pub tenant: Option<String>,
    /// Share of new jobs that run the canary, 0 < percent ≤ 100.
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0, maximum = 100))]
    pub percent: f64,
    /// Default `job`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// Promote by itself after this many canary outcomes with no breach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promote_after: Option<u32>,
    /// At least 1 (default 10), at most `window`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub min_jobs: Option<u32>,
    /// From `min_jobs` to 10000 (default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub window: Option<u32>,
    /// A share, 0 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
    pub max_failure_delta: Option<f64>,
    /// A share, 0 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
    pub max_invalid_delta: Option<f64>,
    /// At least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub max_p95_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95_slack_ms: Option<u64>,
    /// A canary run's deadline: this many times the stable component's p95 on inputs
    /// of similar length...
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub deadline_factor: Option<f64>,
    /// ...plus this many milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(maximum = 3600000))]
    pub deadline_floor_ms: Option<u64>,
}
