//! tracing-subscriber set-up: JSON lines in production, compact text in development.

use tracing_subscriber::EnvFilter;

use crate::app::config::{Config, LogFormat};

pub fn init(config: &Config) {
    let level = match config.server.log_level.as_str() {
        "silent" => "off",
        other => other,
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| {
            EnvFilter::new(format!(
                "{level},actix_server=warn,fred=warn,hyper=warn,reqwest=warn,tokio_postgres=warn"
            ))
        });
    let json = match config.server.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => config.is_production(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // A second init (tests start several apps in one process) is harmless: the first subscriber stays.
    if json {
        let _ = builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init();
    } else {
        let _ = builder.compact().try_init();
    }
}
