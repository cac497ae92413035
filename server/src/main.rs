//! `quad-server`: parses the command line, starts tracing, and runs the server until
//! SIGINT or SIGTERM (a second signal exits at once).

use clap::Parser;
use quad_server::Config;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The Quad virtual campus server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// A TOML config file; command-line flags and QUAD_* variables override it.
    #[arg(long, env = "QUAD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long, env = "QUAD_LISTEN")]
    listen: Option<SocketAddr>,
    /// The Tiled map (.tmj) of the campus.
    #[arg(long, env = "QUAD_MAP")]
    map: Option<PathBuf>,
    /// Directory of the page's static files.
    #[arg(long, env = "QUAD_ASSETS")]
    assets: Option<PathBuf>,
    /// Directory of the built wasm client.
    #[arg(long, env = "QUAD_CLIENT_DIR")]
    client_dir: Option<PathBuf>,
    /// Directory for the server's data.
    #[arg(long, env = "QUAD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Development mode: pages may choose their spawn with ?spawn=X,Y.
    #[arg(long, env = "QUAD_DEV")]
    dev: bool,
    /// Where the embedded STUN/TURN server listens, UDP and TCP (default: the --listen IP,
    /// port 3478).
    #[arg(long, env = "QUAD_TURN_LISTEN")]
    turn_listen: Option<SocketAddr>,
    /// The address browsers reach TURN at, when it is not the --turn-listen IP.
    #[arg(long, env = "QUAD_TURN_PUBLIC_IP")]
    turn_public_ip: Option<std::net::IpAddr>,
}

impl Cli {
    fn into_config(self) -> Result<Config, quad_server::config::ConfigError> {
        let mut config = Config::from_file(self.config.as_deref())?;
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.map {
            config.map = v;
        }
        if let Some(v) = self.assets {
            config.assets_dir = v;
        }
        if let Some(v) = self.client_dir {
            config.client_dir = v;
        }
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        config.dev |= self.dev;
        if self.turn_listen.is_some() {
            config.turn_listen = self.turn_listen;
        }
        if self.turn_public_ip.is_some() {
            config.turn_public_ip = self.turn_public_ip;
        }
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // webrtc-rs's ICE and DTLS warn about routine things on every connection.
                .unwrap_or_else(|_| {
                    "info,warp=warn,hyper=warn,rtc_ice=error,rtc_dtls=error".into()
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Cli::parse().into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match quad_server::run(config, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Completes on the first SIGINT or SIGTERM; a second one exits immediately.
async fn shutdown_signal() {
    wait_for_signal().await;
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
