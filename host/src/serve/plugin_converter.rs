//! The worker's [`Converter`] backed by the WebAssembly converter component, run through
//! the plugin runtime (`crate::plugins`) in a child process per conversion.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::config::ServiceConfig;
use crate::plugins::{
    ConvertError, ConvertOptions, ConverterPlugin, Mode, PluginRuntime, RunError, RunLimits,
    RuntimeConfig,
};
use crate::queue::JobOptions;
use crate::worker::{ConvertFailure, ConvertSummary, Converter, ProgressFn};

/// A loaded converter component and the limits of each run.
pub struct PluginConverter {
    plugin: Arc<ConverterPlugin>,
    limits: RunLimits,
}

impl PluginConverter {
    /// Compiles (or loads from `{data_dir}/plugin-cache`) the configured converter, or
    /// the one built into the binary. Blocking: compiling can take seconds.
    pub fn load(config: &ServiceConfig, embedded: &[u8]) -> anyhow::Result<Self> {
        let bytes = match &config.converter {
            Some(path) => {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
            }
            None => embedded.to_vec(),
        };
        let runtime_config = RuntimeConfig::new(config.data_dir.join("plugin-cache"))
            .context("finding this executable to run plugins with")?;
        let runtime = PluginRuntime::new(runtime_config)?;
        let plugin = runtime.load_converter(&bytes)?;
        tracing::info!(digest = plugin.digest(), "converter loaded");
        Ok(Self {
            plugin,
            limits: RunLimits::default(),
        })
    }
}

/// The plugin's options for a job's options.
pub fn convert_options(options: &JobOptions) -> ConvertOptions {
    let mode = match (options.vbr, options.bitrate) {
        (Some(quality), _) => Mode::Vbr(quality),
        (None, Some(kbps)) => Mode::Cbr(kbps),
        (None, None) => ConvertOptions::default().mode,
    };
    ConvertOptions {
        mode,
        sample_rate: options.sample_rate,
        mono: options.mono,
        trim: None,
    }
}

/// The converter's own verdicts on the input are final; limits, traps and I/O may pass
/// on another attempt (another machine, less load), so they are retried.
pub fn classify(error: RunError) -> ConvertFailure {
    match error {
        RunError::Convert(ConvertError::Io(_)) => ConvertFailure::Retryable(error.to_string()),
        RunError::Convert(_) => ConvertFailure::Permanent(error.to_string()),
        other => ConvertFailure::Retryable(other.to_string()),
    }
}

impl Converter for PluginConverter {
    fn convert(
        &self,
        input: &Path,
        output: &Path,
        options: &JobOptions,
        progress: ProgressFn<'_>,
    ) -> Result<ConvertSummary, ConvertFailure> {
        let io = |what: &str, e: std::io::Error| ConvertFailure::Retryable(format!("{what}: {e}"));
        let input = File::open(input).map_err(|e| io("opening the input", e))?;
        let output = File::create(output).map_err(|e| io("creating the output", e))?;
        let summary = self
            .plugin
            .convert(
                &input,
                &output,
                &convert_options(options),
                &self.limits,
                &mut |p| progress(p),
            )
            .map_err(classify)?;
        Ok(ConvertSummary {
            duration_ms: summary.duration_ms,
        })
    }
}
