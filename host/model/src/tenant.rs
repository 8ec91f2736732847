//! A tenant's limits and how they layer: server defaults (the `--tenant-defaults`
//! setting) → tenant (set by the operator). A lower layer can only tighten: the effective
//! value of a cap is the smallest one set. Jobs carry no limit options of their own (their
//! options are bitrate, VBR, rate, mono), so a job can never loosen a limit. The weight is
//! not a cap and is per tenant only (1 unless the operator sets one).
//!
//! Every limit has one name, used for its `--tenant-defaults` key, its JSON field and the
//! `limit` of a `limit_exceeded` error. `tenant_limits!` below is the one list of them:
//! it makes [`TenantLimits`] (its fields, their docs and schemas), [`LIMITS`] (name, unit,
//! the admin CLI's flag and its help) and [`LIMIT_NAMES`]. Adding a limit is one entry
//! there, plus its enforcement.

use serde::{Deserialize, Serialize};

/// The layer of a limit: the tenant's own, or the server's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LimitLayer {
    Tenant,
    Server,
}

/// How a limit's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A whole number of what the name says (jobs, days, seconds, messages).
    Count,
    /// Bytes.
    Bytes,
    /// Mebibytes (2^20 bytes).
    Mib,
}

/// One tenant limit, as `tenant_limits!` declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Its name: the `--tenant-defaults` key, the JSON field, a refusal's `limit`.
    pub name: &'static str,
    /// What it caps (the field's doc, also its description in the OpenAPI schema).
    pub doc: &'static str,
    /// The unit of its values.
    pub unit: Unit,
    /// Its `tapedeck admin tenant create|limits` flag, without `--`.
    pub flag: &'static str,
    /// The value the flag takes, as its help names it (`N`, `MB`, `DAYS`, ...).
    pub flag_value: &'static str,
    /// The flag's value is this power of ten of the limit's unit (MB of bytes: 6), so
    /// people type `--quota-gb 50` rather than 50,000,000,000.
    pub flag_exponent: u32,
    /// The largest value allowed, if any besides `u64::MAX`.
    pub max: Option<u64>,
}

impl Limit {
    /// The doc as one line (the declaration's doc lines joined).
    pub fn description(&self) -> String {
        self.doc.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The help of its CLI flag: the description, and the flag's unit when it is not the
    /// limit's own.
    pub fn flag_help(&self) -> String {
        match self.flag_exponent {
            0 => self.description(),
            e => format!(
                "{} The flag takes {} (1 {} = 10^{e} bytes).",
                self.description(),
                self.flag_value,
                self.flag_value
            ),
        }
    }

    /// The limit called `name`.
    pub fn named(name: &str) -> Option<&'static Limit> {
        LIMITS.iter().find(|l| l.name == name)
    }
}

/// Declares every tenant limit once: `/// doc` then
/// `name: Unit, flag "flag-name" "VALUE" exponent[, max N];`. Makes [`TenantLimits`],
/// [`LIMITS`], [`LIMIT_NAMES`], and the slot lookups `get`/`set` use.
macro_rules! tenant_limits {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident: $unit:ident, flag $flag:literal $value:literal $exp:literal
            $(, max $max:tt)?;
    )+) => {
        /// Caps of one tenant (or the server's defaults); `None`: not limited at this layer.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(deny_unknown_fields)]
        pub struct TenantLimits {
            $(
                $(#[doc = $doc])+
                #[serde(skip_serializing_if = "Option::is_none")]
                #[cfg_attr(
                    feature = "openapi",
                    schema(nullable = false, minimum = 1 $(, maximum = $max)?)
                )]
                pub $name: Option<u64>,
            )+
        }

        /// The body of `PATCH /v1/admin/tenants/{t}/limits` as the OpenAPI description
        /// shows it: any of the limits, `null` clearing one (the handler reads a map, as
        /// absent and `null` differ).
        #[cfg(feature = "openapi")]
        #[derive(Deserialize, utoipa::ToSchema)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        pub struct LimitsPatch {
            $(
                $(#[doc = $doc])+
                #[schema(minimum = 1 $(, maximum = $max)?)]
                $name: Option<u64>,
            )+
        }

        /// Every limit, in display order (the API's order).
        pub const LIMITS: &[Limit] = &[$(
            Limit {
                name: stringify!($name),
                doc: concat!($($doc, "\n"),+),
                unit: Unit::$unit,
                flag: $flag,
                flag_value: $value,
                flag_exponent: $exp,
                max: tenant_limits!(@max $($max)?),
            },
        )+];

        /// The names of every limit, in display order.
        pub const LIMIT_NAMES: &[&str] = &[$(stringify!($name)),+];

        impl TenantLimits {
            fn slot(&self, name: &str) -> Option<&Option<u64>> {
                match name {
                    $(stringify!($name) => Some(&self.$name),)+
                    _ => None,
                }
            }

            fn slot_mut(&mut self, name: &str) -> Option<&mut Option<u64>> {
                match name {
                    $(stringify!($name) => Some(&mut self.$name),)+
                    _ => None,
                }
            }
        }
    };
    (@max) => { None };
    (@max $max:tt) => { Some($max) };
}

tenant_limits! {
    /// Largest upload, in bytes.
    max_upload_bytes: Bytes, flag "max-upload-mb" "MB" 6;
    /// New jobs per minute (rate).
    jobs_per_minute: Count, flag "jobs-per-minute" "N" 0;
    /// Jobs not yet finished (queued, waiting for a retry, or converting).
    max_queued: Count, flag "max-queued" "N" 0;
    /// Conversions running at once across all workers.
    max_running: Count, flag "max-running" "N" 0;
    /// Bytes stored (uploads and MP3s).
    quota_bytes: Bytes, flag "quota-gb" "GB" 9;
    /// Days a job's input and output are kept after it was created.
    retention_days: Count, flag "retention-days" "DAYS" 0;
    /// Linear memory of one conversion, in MiB.
    max_memory_mib: Mib, flag "max-memory-mb" "MIB" 0;
    /// CPU seconds a conversion may use per minute of input audio.
    cpu_per_audio_minute: Count, flag "cpu-per-audio-minute" "S" 0;
    /// MP3 bytes one conversion may write, in MiB.
    max_output_mib: Mib, flag "max-output-mb" "MIB" 0;
    /// Longest input, in minutes of audio.
    max_input_minutes: Count, flag "max-input-minutes" "MIN" 0;
    /// CPU seconds of conversions per hour (measured, `getrusage`).
    cpu_seconds_per_hour: Count, flag "cpu-seconds-per-hour" "S" 0;
    /// Notification messages per hour.
    notifications_per_hour: Count, flag "notifications-per-hour" "N" 0;
    /// Share of the workers when tenants compete (1..=1000; default 1).
    weight: Count, flag "weight" "N" 0, max 1000;
}

impl TenantLimits {
    /// The value of the limit called `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.slot(name).and_then(|v| *v)
    }

    /// Sets (or with `None` clears) the limit called `name`; false if there is none.
    pub fn set(&mut self, name: &str, value: Option<u64>) -> bool {
        match self.slot_mut(name) {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        }
    }

    /// No limit is set.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// `(name, value)` of every limit that is set.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        LIMIT_NAMES
            .iter()
            .filter_map(|n| self.get(n).map(|v| (*n, v)))
    }

    /// Checks values: a cap of 0 means nothing is allowed, which is never meant (to stop
    /// a tenant, delete or suspend it); none is over its `max` (the weight's 1000).
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in self.iter() {
            if value == 0 {
                return Err(format!(
                    "{name} must be at least 1 (leave it unset for no limit)"
                ));
            }
        }
        for limit in LIMITS {
            if let (Some(max), Some(value)) = (limit.max, self.get(limit.name))
                && value > max
            {
                return Err(format!("{} must be 1..={max}", limit.name));
            }
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

    /// Which layer set the effective value of `name`.
    pub fn layer_of(&self, name: &str, server: &TenantLimits) -> LimitLayer {
        match (self.get(name), server.get(name)) {
            (Some(t), Some(s)) if s < t => LimitLayer::Server,
            (Some(_), _) => LimitLayer::Tenant,
            _ => LimitLayer::Server,
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
        assert_eq!(
            tenant.layer_of("jobs_per_minute", &server),
            LimitLayer::Server
        );
        assert_eq!(tenant.layer_of("max_running", &server), LimitLayer::Tenant);
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

    #[test]
    fn the_table_names_each_limit_once_with_its_flag_and_help() {
        assert_eq!(LIMITS.len(), LIMIT_NAMES.len());
        let mut flags: Vec<_> = LIMITS.iter().map(|l| l.flag).collect();
        flags.sort_unstable();
        flags.dedup();
        assert_eq!(flags.len(), LIMITS.len(), "one flag per limit");
        let upload = Limit::named("max_upload_bytes").unwrap();
        assert_eq!(upload.unit, Unit::Bytes);
        assert_eq!(
            upload.flag_help(),
            "Largest upload, in bytes. The flag takes MB (1 MB = 10^6 bytes)."
        );
        assert_eq!(Limit::named("quota_bytes").unwrap().flag, "quota-gb");
        assert_eq!(
            Limit::named("max_queued").unwrap().flag_help(),
            "Jobs not yet finished (queued, waiting for a retry, or converting)."
        );
        assert!(Limit::named("nope").is_none());
        assert!(TenantLimits::parse_list("weight=1000").is_ok());
        assert_eq!(
            TenantLimits::parse_list("weight=1001").unwrap_err(),
            "weight must be 1..=1000"
        );
    }
}
