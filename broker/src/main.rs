//! `strait-broker`: parses the configuration, sets up logging and runs the broker until
//! SIGINT or SIGTERM.

use anyhow::Context;
use clap::Parser;
use strait_broker::config::{BrokerArgs, BrokerConfig};

fn main() -> anyhow::Result<()> {
    let args = BrokerArgs::parse();
    let config = match BrokerConfig::load(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("strait-broker: {err}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRAIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().thread_name("strait-broker");
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    strait_broker::pretouch::install(&mut runtime, config.pretouch_mib, config.worker_threads);
    let runtime = runtime.build().context("starting the tokio runtime")?;
    runtime.block_on(strait_broker::server::run(config))?;
    Ok(())
}
