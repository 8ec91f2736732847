//! A tenant's limits and how they layer: server defaults (the `--tenant-defaults`
//! setting) → tenant (set by the operator). A lower layer can only tighten: the effective
//! value of a cap is the smallest one set. Jobs carry no limit options of their own (their
//! options are bitrate, VBR, rate, mono), so a job can never loosen a limit. The weight is
//! not a cap and is per tenant only (1 unless the operator sets one).
//!
//! Every limit has one name, used for its `--tenant-defaults` key, its JSON field and the
//! `limit` of a `limit_exceeded` error. The admin CLI's flag is the name with `-` for `_`,
//! except four that take friendlier units: `--max-upload-mb` (10^6 bytes),
//! `--quota-gb` (10^9 bytes), `--max-memory-mb` and `--max-output-mb` (MiB, as stored).

use serde::{Deserialize, Serialize};

/// Caps of one tenant (or the server's defaults); `None`: not limited at this layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Largest upload, in bytes (the admin CLI takes MB).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, minimum = 1))]
    pub max_upload_bytes: Option<u64>,
    /// New jobs per minute (rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, minimum = 1))]
    pub jobs_per_minute: Option<u64>,
    /// Jobs not yet finished (queued, waiting for a retry, or converting).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, minimum = 1))]
    pub max_queued: Option<u64>,
    /// Conversions running at once across all workers.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, minimum = 1))]
    pub max_running: Option<u64>,
    /// Bytes stored (uploads and MP3s).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, minimum = 1))]
    pub quota_bytes: Option<u64>,
    /// Days a job's input and output are kept after it was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, minimum = 1))]
    pub retention_days: Option<u64>,
    /// Linear memory of one conversion, in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, minimum = 1))]
    pub max_memory_mib: Option<u64>,
    /// CPU seconds a conversion may use per minute of input audio.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, minimum = 1))]
    pub cpu_per_audio_minute: Option<u64>,
    /// MP3 bytes one conversion may write, in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, minimum = 1))]
    pub max_output_mib: Option<u64>,
    /// Longest input, in minutes of audio.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, minimum = 1))]
    pub max_input_minutes: Option<u64>,
    /// CPU seconds of conversions per hour (measured, `getrusage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, minimum = 1))]
    pub cpu_seconds_per_hour: Option<u64>,
    /// Notification messages per hour.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, minimum = 1))]
    pub notifications_per_hour: Option<u64>,
    /// Share of the workers when tenants compete (1..=1000; default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, minimum = 1, maximum = 1000)
    )]
    pub weight: Option<u64>,
}

/// The names of every limit, in display order.
pub const LIMIT_NAMES: &[&str] = &[
    "max_upload_bytes",
    "jobs_per_minute",
    "max_queued",
    "max_running",
    "quota_bytes",
    "retention_days",
    "max_memory_mib",
    "cpu_per_audio_minute",
    "max_output_mib",
    "max_input_minutes",
    "cpu_seconds_per_hour",
    "notifications_per_hour",
    "weight",
];

impl TenantLimits {
    /// The value of the limit called `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.slot(name).and_then(|v| *v)
    }

    fn slot(&self, name: &str) -> Option<&Option<u64>> {
        Some(match name {
            "max_upload_bytes" => &self.max_upload_bytes,
            "jobs_per_minute" => &self.jobs_per_minute,
            "max_queued" => &self.max_queued,
            "max_running" => &self.max_running,
            "quota_bytes" => &self.quota_bytes,
            "retention_days" => &self.retention_days,
            "max_memory_mib" => &self.max_memory_mib,
            "cpu_per_audio_minute" => &self.cpu_per_audio_minute,
            "max_output_mib" => &self.max_output_mib,
            "max_input_minutes" => &self.max_input_minutes,
            "cpu_seconds_per_hour" => &self.cpu_seconds_per_hour,
            "notifications_per_hour" => &self.notifications_per_hour,
            "weight" => &self.weight,
            _ => return None,
        })
    }

    /// Sets (or with `None` clears) the limit called `name`; false if there is none.
    pub fn set(&mut self, name: &str, value: Option<u64>) -> bool {
        let slot = match name {
            "max_upload_bytes" => &mut self.max_upload_bytes,
            "jobs_per_minute" => &mut self.jobs_per_minute,
            "max_queued" => &mut self.max_queued,
            "max_running" => &mut self.max_running,
            "quota_bytes" => &mut self.quota_bytes,
            "retention_days" => &mut self.retention_days,
            "max_memory_mib" => &mut self.max_memory_mib,
            "cpu_per_audio_minute" => &mut self.cpu_per_audio_minute,
            "max_output_mib" => &mut self.max_output_mib,
            "max_input_minutes" => &mut self.max_input_minutes,
            "cpu_seconds_per_hour" => &mut self.cpu_seconds_per_hour,
            "notifications_per_hour" => &mut self.notifications_per_hour,
            "weight" => &mut self.weight,
            _ => return false,
        };
        *slot = value;
        true
    }

    /// `(name, value)` of every limit that is set.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        LIMIT_NAMES
            .iter()
            .filter_map(|n| self.get(n).map(|v| (*n, v)))
    }

    /// Checks values: a cap of 0 means nothing is allowed, which is never meant (to stop
    /// a tenant, delete or suspend it); the weight is 1..=1000.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in self.iter() {
            if value == 0 {
                return Err(format!(
                    "{name} must be at least 1 (leave it unset for no limit)"
                ));
            }
        }
        if let Some(w) = self.weight
            && w > 1000
        {
            return Err("weight must be 1..=1000".into());
        }
        Ok(())
    }

    /// Parses `name=value,name=value` (the `--tenant-defaults` setting; `weight` is per
    /// tenant only and refused here).
    pub fn parse_defaults(text: &str) -> Result<Self, String> {
        let limits = Self::parse_list(text)?;
        if limits.weight.is_some() {
            return Err("weight is set per tenant, not as a server default".into());
        }
        Ok(limits)
    }

    /// Parses `name=value,name=value`.
    pub fn parse_list(text: &str) -> Result<Self, String> {
        let mut limits = Self::default();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}`: expected name=value"))?;
            let value: u64 = value
                .trim()
                .parse()
                .map_err(|_| format!("`{pair}`: the value must be a whole number"))?;
            if !limits.set(name.trim(), Some(value)) {
                return Err(format!(
                    "`{name}` is not a limit (one of: {})",
                    LIMIT_NAMES.join(", ")
                ));
            }
        }
        limits.validate()?;
        Ok(limits)
    }

    /// This layer over `below` (the server defaults): caps take the smaller value, the
    /// weight this layer's if set.
    pub fn over(&self, below: &TenantLimits) -> TenantLimits {
        let mut out = TenantLimits::default();
        for name in LIMIT_NAMES {
            let value = if *name == "weight" {
                self.get(name).or(below.get(name))
            } else {
                match (self.get(name), below.get(name)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            };
            out.set(name, value);
        }
        out
    }

    /// Which layer set the effective value of `name`: `"tenant"` or `"server"`.
    pub fn layer_of(&self, name: &str, server: &TenantLimits) -> &'static str {
        match (self.get(name), server.get(name)) {
            (Some(t), Some(s)) if s < t => "server",
            (Some(_), _) => "tenant",
            _ => "server",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_layers_only_tighten() {
        let server = TenantLimits::parse_list("jobs_per_minute=60,max_running=4,weight=1").unwrap();
        let tenant =
            TenantLimits::parse_list("jobs_per_minute=600,max_running=2,weight=3,quota_bytes=10")
                .unwrap();
        let eff = tenant.over(&server);
        assert_eq!(eff.jobs_per_minute, Some(60));
        assert_eq!(eff.max_running, Some(2));
        assert_eq!(eff.weight, Some(3));
        assert_eq!(eff.quota_bytes, Some(10));
        assert_eq!(eff.max_queued, None);
        assert_eq!(tenant.layer_of("jobs_per_minute", &server), "server");
        assert_eq!(tenant.layer_of("max_running", &server), "tenant");
    }

    #[test]
    fn lists_parse_and_refuse_junk() {
        assert!(TenantLimits::parse_list("").unwrap() == TenantLimits::default());
        assert!(
            TenantLimits::parse_list("nope=1")
                .unwrap_err()
                .contains("not a limit")
        );
        assert!(TenantLimits::parse_list("max_queued=x").is_err());
        assert!(TenantLimits::parse_list("max_queued=0").is_err());
        assert!(TenantLimits::parse_list("weight=1001").is_err());
        assert!(TenantLimits::parse_list("weight=3").is_ok());
        assert!(
            TenantLimits::parse_defaults("weight=3").is_err(),
            "weight is per tenant"
        );
        for name in LIMIT_NAMES {
            let mut l = TenantLimits::default();
            assert!(l.set(name, Some(7)));
            assert_eq!(l.get(name), Some(7), "{name}");
            let json = serde_json::to_value(&l).unwrap();
            assert_eq!(json[name], 7, "{name}: the JSON field has the limit's name");
        }
    }
}
