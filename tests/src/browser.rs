//! Browser tests: headless Chromium (over chromedriver) and Firefox ESR (over geckodriver)
//! driven by WebDriver, with the flags and preferences that work on these machines (why
//! each is there: `docs/architecture.md`, "Browser tests") and fake media devices.
//! A missing browser or driver is an error that says how to install it, never a skip.

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const FIREFOX: &str = "/usr/bin/firefox-esr";
/// WebKitGTK's WebDriver (Debian's `webkit2gtk-driver`), the browser it drives, and the
/// virtual display that browser needs (`xvfb`).
pub const WEBKIT_DRIVER: &str = "/usr/bin/WebKitWebDriver";
pub const MINIBROWSER: &str = "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser";
pub const XVFB: &str = "/usr/bin/Xvfb";
/// NSS's certificate tool (Debian's `libnss3-tools`), for Firefox profiles that trust a
/// self-signed server.
pub const CERTUTIL: &str = "/usr/bin/certutil";

/// geckodriver: `QUAD_GECKODRIVER` if set, else the one `cargo install geckodriver` put in
/// cargo's bin directory (`cargo xtask test` installs it there when it is missing).
pub fn geckodriver() -> PathBuf {
    if let Some(path) = std::env::var_os("QUAD_GECKODRIVER") {
        return PathBuf::from(path);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default();
    cargo_home.join("bin/geckodriver")
}

/// Two tests of one browser scenario, `$scenario::in_chromium` and `$scenario::in_firefox`:
/// `$scenario` is an `async fn(Engine) -> anyhow::Result<()>` beside the macro, and a
/// failure names the engine. The test attribute is `tokio::test` unless given.
#[macro_export]
macro_rules! in_each_engine {
    ($scenario:ident) => {
        $crate::in_each_engine!($scenario, tokio::test);
    };
    ($scenario:ident, $($test:tt)+) => {
        mod $scenario {
            use ::anyhow::Context as _;
            use $crate::browser::Engine;

            #[$($test)+]
            async fn in_chromium() -> ::anyhow::Result<()> {
                super::$scenario(Engine::Chromium)
                    .await
                    .context(Engine::Chromium.name())
            }

            #[$($test)+]
            async fn in_firefox() -> ::anyhow::Result<()> {
                super::$scenario(Engine::Firefox)
                    .await
                    .context(Engine::Firefox.name())
            }
        }
    };
}

/// A browser engine the tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Chromium,
    Firefox,
    /// WebKitGTK, the engine of Safari: not in [`Engine::ALL`], as Debian builds it without
    /// WebRTC (see `tests/tests/browser_webkit.rs`).
    WebKit,
}

impl Engine {
    pub const ALL: [Engine; 2] = [Engine::Chromium, Engine::Firefox];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Chromium => "Chromium",
            Engine::Firefox => "Firefox",
            Engine::WebKit => "WebKit",
        }
    }
}

/// Browsers of one engine. For Chromium, one chromedriver process on a free loopback port
/// serves them all; geckodriver takes one session at a time, so each Firefox browser gets
/// its own (started by [`Driver::browser`]). Killed on drop.
pub struct Driver {
    engine: Engine,
    /// chromedriver and its URL (Chromium only).
    chromedriver: Option<(Child, String)>,
    /// The test-network namespace Firefox browsers run in (its name), if any.
    namespace: Option<String>,
    /// More Chromium flags for every browser of this driver.
    extra_args: Vec<String>,
    /// WebKitWebDriver, its URL and its display (WebKit only).
    webkit: Option<WebKitDriver>,
    /// For Firefox browsers: more preferences, and a certificate their profile trusts as
    /// a peer's (see [`Driver::with_firefox`]).
    firefox_extra: FirefoxExtra,
}

/// What a test adds to its Firefox browsers.
#[derive(Clone, Default)]
struct FirefoxExtra {
    prefs: serde_json::Map<String, Value>,
    trusted_cert: Option<PathBuf>,
}

/// WebKitWebDriver on a virtual display. The driver runs in a process group of its own, so
/// dropping this ends MiniBrowser and WebKit's helper processes with it.
struct WebKitDriver {
    url: String,
    driver: Child,
    _display: Child,
}

impl Drop for WebKitDriver {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

impl Driver {
    /// Chromium browsers.
    pub async fn start() -> Result<Driver> {
        Self::start_engine(Engine::Chromium).await
    }

    /// Browsers of `engine`.
    pub async fn start_engine(engine: Engine) -> Result<Driver> {
        match engine {
            Engine::Chromium => Self::start_with(Command::new(CHROMEDRIVER), None).await,
            Engine::Firefox => {
                require(FIREFOX, "`apt-get install -y firefox-esr`")?;
                require(
                    &geckodriver().to_string_lossy(),
                    "`cargo install geckodriver --locked`",
                )?;
                default_route_through_loopback()?;
                Ok(Driver {
                    engine,
                    chromedriver: None,
                    namespace: None,
                    extra_args: Vec::new(),
                    webkit: None,
                    firefox_extra: FirefoxExtra::default(),
                })
            }
            Engine::WebKit => {
                for bin in [WEBKIT_DRIVER, MINIBROWSER, XVFB] {
                    require(bin, "`apt-get install -y webkit2gtk-driver xvfb`")?;
                }
                Ok(Driver {
                    engine,
                    chromedriver: None,
                    namespace: None,
                    extra_args: Vec::new(),
                    webkit: Some(start_webkit().await?),
                    firefox_extra: FirefoxExtra::default(),
                })
            }
        }
    }

    /// Browsers of `engine` inside a site of a test network. Firefox there accepts any
    /// certificate (`acceptInsecureCerts`: the lab's server is self-signed); Chromium is
    /// given the server's public-key hash ([`Driver::with_args`]).
    pub async fn start_engine_in(
        engine: Engine,
        lab: &crate::netlab::Lab,
        site: crate::netlab::Site,
    ) -> Result<Driver> {
        match engine {
            Engine::Chromium => Self::start_in(lab, site).await,
            Engine::Firefox => {
                require(FIREFOX, "`apt-get install -y firefox-esr`")?;
                require(
                    &geckodriver().to_string_lossy(),
                    "`cargo install geckodriver --locked`",
                )?;
                Ok(Driver {
                    engine,
                    chromedriver: None,
                    namespace: Some(lab.namespace(site)),
                    extra_args: Vec::new(),
                    webkit: None,
                    firefox_extra: FirefoxExtra::default(),
                })
            }
            Engine::WebKit => bail!("WebKit does not run in the test network (no WebRTC)"),
        }
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// A chromedriver (and so its browsers) inside a site of a test network, reached
    /// through a forwarded port.
    pub async fn start_in(lab: &crate::netlab::Lab, site: crate::netlab::Site) -> Result<Driver> {
        Self::start_with(lab.command(site, CHROMEDRIVER), Some((lab, site))).await
    }

    /// Firefox preferences added to every Firefox this driver starts, and a certificate
    /// (PEM) each one's profile trusts as a peer's (`certutil -t P,,`): a self-signed
    /// server's, for what `acceptInsecureCerts` does not cover (TURN over TLS).
    pub fn with_firefox(mut self, prefs: Value, trusted_cert: Option<PathBuf>) -> Driver {
        if let Value::Object(prefs) = prefs {
            self.firefox_extra.prefs.extend(prefs);
        }
        self.firefox_extra.trusted_cert = trusted_cert;
        self
    }

    /// Chromium flags added to every browser this driver starts.
    pub fn with_args(mut self, args: impl IntoIterator<Item = String>) -> Driver {
        self.extra_args.extend(args);
        self
    }

    async fn start_with(
        mut command: Command,
        lab: Option<(&crate::netlab::Lab, crate::netlab::Site)>,
    ) -> Result<Driver> {
        // webrtc brings rustls's ring provider and fantoccini its aws-lc one; with both,
        // rustls cannot choose by itself. (An error only says one is installed already.)
        for bin in [CHROMIUM, CHROMEDRIVER] {
            require(bin, "`apt-get install -y chromium chromium-driver`")?;
        }
        // Port 0: chromedriver binds a free port itself and says which on stdout. (Probing
        // for a free port first raced with the other tests binding ports in between: once
        // chromedriver lost its port and the session went to nobody.)
        command.arg("--port=0").arg("--allowed-ips=127.0.0.1");
        let (child, port) = spawn_webdriver(command, "chromedriver", started_on).await?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let addr = match lab {
            Some((lab, site)) => lab.forward(site, addr).await?,
            None => addr,
        };
        Ok(Driver {
            engine: Engine::Chromium,
            chromedriver: Some((child, format!("http://{addr}"))),
            namespace: None,
            extra_args: Vec::new(),
            webkit: None,
            firefox_extra: FirefoxExtra::default(),
        })
    }

    /// A new browser with a fresh profile and fake camera and microphone.
    pub async fn browser(&self) -> Result<Browser> {
        // webrtc brings rustls's ring provider and fantoccini its aws-lc one; with both,
        // rustls cannot choose by itself. (An error only says one is installed already.)
        let _ = rustls::crypto::ring::default_provider().install_default();
        match (&self.chromedriver, &self.webkit) {
            (Some((_, url)), _) => self.chromium(url).await,
            (None, Some(webkit)) => webkit_session(&webkit.url).await,
            (None, None) => firefox(self.namespace.as_deref(), &self.firefox_extra).await,
        }
    }

    /// A Chromium browser that plays a phone or tablet: Chromium's mobile emulation with a
    /// `width`×`height` CSS-pixel touch screen (device pixel ratio 2) and the default
    /// autoplay rules (audio only after a gesture), for layout and touch tests.
    pub async fn touch_browser(&self, width: u32, height: u32) -> Result<Browser> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let Some((_, url)) = &self.chromedriver else {
            bail!("touch screens are emulated in Chromium only");
        };
        self.chromium_with(url, Some((width, height))).await
    }

    async fn chromium(&self, url: &str) -> Result<Browser> {
        self.chromium_with(url, None).await
    }

    async fn chromium_with(&self, url: &str, touch: Option<(u32, u32)>) -> Result<Browser> {
        let profile = crate::temp_dir("chromium-profile");
        std::fs::create_dir_all(&profile)?;
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                    "--autoplay-policy=no-user-gesture-required",
                    // Tests run in a network namespace with only loopback (see xtask).
                    "--allow-loopback-in-peer-connection",
                    // Host candidates as plain addresses, not mDNS names: Chromium's mDNS
                    // responder fails to start in the test namespace.
                    "--disable-features=WebRtcHideLocalIpsWithMdns",
                    "--window-size=1024,768",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let mut caps = caps;
        if let Some(args) = caps["goog:chromeOptions"]["args"].as_array_mut() {
            args.extend(self.extra_args.iter().map(|a| Value::from(a.as_str())));
        }
        if let Some((width, height)) = touch {
            // A phone's own autoplay rules: audio waits for a tap.
            if let Some(args) = caps["goog:chromeOptions"]["args"].as_array_mut() {
                args.retain(|a| a != "--autoplay-policy=no-user-gesture-required");
            }
            caps["goog:chromeOptions"]["mobileEmulation"] = json!({
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0, "touch": true}
            });
        }
        // `QUAD_CHROME_LOG=DIR` keeps each browser's own log (WebRTC included) in DIR.
        if let Some(dir) = std::env::var_os("QUAD_CHROME_LOG") {
            let name = profile
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let log = PathBuf::from(dir).join(format!("{}.log", name.unwrap_or_default()));
            if let Some(args) = caps["goog:chromeOptions"]["args"].as_array_mut() {
                args.push("--enable-logging".into());
                args.push(format!("--log-file={}", log.display()).into());
                args.push("--vmodule=*/webrtc/*=1,*p2p*=2".into());
            }
        }
        session(url, caps, profile, Engine::Chromium, None).await
    }
}

/// A WebDriver session at `url` with `caps`: the browser of `engine`, in `profile`, with
/// its own driver process (killed with it) if it has one.
async fn session(
    url: &str,
    caps: Value,
    profile: PathBuf,
    engine: Engine,
    driver: Option<Child>,
) -> Result<Browser> {
    let Value::Object(caps) = caps else {
        bail!("capabilities are an object");
    };
    let client = ClientBuilder::rustls()?
        .capabilities(caps)
        .connect(url)
        .await
        .with_context(|| format!("new WebDriver session ({})", engine.name()))?;
    Ok(Browser {
        client,
        profile,
        engine,
        _geckodriver: driver,
    })
}

/// A Firefox browser with a fresh profile, its own geckodriver, and fake devices. The
/// preferences: fake camera and microphone without a prompt; media that plays without a
/// gesture; loopback in ICE (Firefox leaves it out, and the tests' network has nothing
/// else); host candidates as plain addresses; and nothing of Firefox's own background
/// traffic (updates, telemetry, safe browsing, captive-portal checks), which this network
/// refuses.
async fn firefox(namespace: Option<&str>, extra: &FirefoxExtra) -> Result<Browser> {
    let profile = crate::temp_dir("firefox-profile");
    std::fs::create_dir_all(&profile)?;
    if let Some(cert) = &extra.trusted_cert {
        let db = format!("sql:{}", profile.display());
        let made = std::process::Command::new(CERTUTIL)
            .args(["-N", "-d", &db, "--empty-password"])
            .status()
            .context("certutil (`apt-get install -y libnss3-tools`)")?;
        let added = std::process::Command::new(CERTUTIL)
            .args(["-A", "-n", "quad-server", "-t", "P,,", "-d", &db, "-i"])
            .arg(cert)
            .status()
            .context("certutil")?;
        if !made.success() || !added.success() {
            bail!(
                "certutil could not trust {} in {}",
                cert.display(),
                profile.display()
            );
        }
    }
    let mut command = match namespace {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns]).arg(geckodriver());
            command
        }
        None => Command::new(geckodriver()),
    };
    command.args(["--port", "0", "--host", "127.0.0.1"]);
    // `QUAD_FIREFOX_LOG=DIR` keeps each Firefox's WebRTC log (ICE, TURN's TCP and TLS
    // sockets, NSS) in DIR. (Firefox takes it from geckodriver's environment; the
    // capabilities' `env` did not reach it.)
    if let Some(dir) = std::env::var_os("QUAD_FIREFOX_LOG") {
        let name = profile
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        command
            .env(
                "MOZ_LOG",
                "timestamp,nicer:5,webrtc_tcp_socket:5,signaling:3,pipnss:4",
            )
            .env("MOZ_LOG_FILE", PathBuf::from(dir).join(name));
    }
    let (child, port) = spawn_webdriver(command, "geckodriver", listening_on).await?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let addr = match namespace {
        Some(ns) => {
            crate::netlab::forward_from_port(format!("/run/netns/{ns}"), addr, port).await?
        }
        None => addr,
    };
    let caps = json!({
        "browserName": "firefox",
        "acceptInsecureCerts": namespace.is_some(),
        "moz:firefoxOptions": {
            "binary": FIREFOX,
            "args": ["-headless", "-profile", profile.display().to_string(),
                     "--width=1024", "--height=768"],
            "prefs": {
                "media.navigator.streams.fake": true,
                "media.navigator.permission.disabled": true,
                "media.autoplay.default": 0,
                "media.autoplay.blocking_policy": 0,
                "media.peerconnection.ice.loopback": true,
                "media.peerconnection.ice.obfuscate_host_addresses": false,
                "app.update.auto": false,
                "app.update.enabled": false,
                "browser.safebrowsing.malware.enabled": false,
                "browser.safebrowsing.phishing.enabled": false,
                "browser.shell.checkDefaultBrowser": false,
                "datareporting.policy.dataSubmissionEnabled": false,
                "extensions.update.enabled": false,
                "network.captive-portal-service.enabled": false,
                // A network without a default route reads as offline, and an offline
                // Firefox gathers no ICE candidates: its status is not to follow the
                // network's.
                "network.manage-offline-status": false,
                "network.connectivity-service.enabled": false,
                "toolkit.telemetry.enabled": false,
            }
        }
    });
    let mut caps = caps;
    if let Some(prefs) = caps["moz:firefoxOptions"]["prefs"].as_object_mut() {
        prefs.extend(extra.prefs.clone());
    }
    session(
        &format!("http://{addr}"),
        caps,
        profile,
        Engine::Firefox,
        Some(child),
    )
    .await
}

/// Starts Xvfb on a display it picks (`-displayfd`) and WebKitWebDriver on a port it picks,
/// found from the driver's listening socket (it does not print it).
async fn start_webkit() -> Result<WebKitDriver> {
    let mut xvfb = Command::new(XVFB)
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1280x1024x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting Xvfb")?;
    let stdout = xvfb.stdout.take().context("Xvfb's stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let display = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .context("Xvfb did not start within 20 s")??
        .context("Xvfb exited before it started")?;
    let display = format!(":{}", display.trim());
    let driver = Command::new(WEBKIT_DRIVER)
        .args(["--port=0", "--host=local"])
        .env("DISPLAY", &display)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .context("starting WebKitWebDriver")?;
    let pid = driver.id().context("WebKitWebDriver's pid")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = loop {
        if let Some(port) = listening_port(pid) {
            break port;
        }
        if Instant::now() > deadline {
            bail!("WebKitWebDriver did not listen within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Ok(WebKitDriver {
        url: format!("http://127.0.0.1:{port}"),
        driver,
        _display: xvfb,
    })
}

/// The IPv4 TCP port process `pid` listens on: its sockets (`/proc/PID/fd`) matched with
/// the listening ones in `/proc/PID/net/tcp`.
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address, state (0A: LISTEN), inode.
        let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
        if *state != "0A" || !inodes.iter().any(|i| i == inode) {
            return None;
        }
        u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
    })
}

/// A WebKitGTK browser (MiniBrowser) with WebRTC and media streams on, if the build has
/// them, and mock camera and microphone.
async fn webkit_session(url: &str) -> Result<Browser> {
    let profile = crate::temp_dir("webkit-profile");
    std::fs::create_dir_all(&profile)?;
    let caps = json!({
        "browserName": "MiniBrowser",
        "webkitgtk:browserOptions": {
            "binary": MINIBROWSER,
            "args": ["--automation", "--enable-webrtc=true", "--enable-media-stream=true",
                     "--enable-mock-capture-devices=true"]
        }
    });
    session(url, caps, profile, Engine::WebKit, None).await
}

/// Firefox gathers no ICE candidates on a network without a default route (it counts as
/// offline), and with one that names no source address its host candidate is `0.0.0.0`.
/// The tests' namespace has only loopback: `cargo xtask test` gives it a default route
/// through loopback from 127.0.0.1 (which reaches nothing more than before); this adds the
/// same when a test runs in such a namespace without it, and never touches a namespace
/// that has any other interface.
fn default_route_through_loopback() -> Result<()> {
    let routes = std::process::Command::new("ip")
        .args(["route", "show", "default"])
        .output()
        .context("running `ip` (Debian's iproute2)")?;
    if !String::from_utf8_lossy(&routes.stdout).trim().is_empty() {
        return Ok(());
    }
    if !crate::netlab::interfaces_besides_loopback()?.is_empty() {
        bail!(
            "Firefox needs a default route to gather ICE candidates, and this network has \
             none: run the tests with `cargo xtask test`"
        );
    }
    let added = std::process::Command::new("ip")
        .args(["route", "add", "default", "dev", "lo", "src", "127.0.0.1"])
        .output()?;
    // Another test may have added it meanwhile.
    if !added.status.success() && !String::from_utf8_lossy(&added.stderr).contains("File exists") {
        bail!(
            "adding a default route through loopback: {}",
            String::from_utf8_lossy(&added.stderr).trim()
        );
    }
    Ok(())
}

/// Fails, saying how to install it, when `bin` is missing.
fn require(bin: &str, install: &str) -> Result<()> {
    if !Path::new(bin).exists() {
        bail!("{bin} is missing: `cargo xtask test` installs it, or run {install}");
    }
    Ok(())
}

/// Starts a WebDriver server (`name`) that picks its own port and says which in a line
/// `port_in` reads; returns the process (killed on drop) and the port.
async fn spawn_webdriver(
    mut command: Command,
    name: &str,
    port_in: fn(&str) -> Option<u16>,
) -> Result<(Child, u16)> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let stdout = child
        .stdout
        .take()
        .with_context(|| format!("{name}'s stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let started = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(port) = port_in(&line) {
                return Ok(port);
            }
        }
        bail!("{name} exited before it started")
    };
    let port = tokio::time::timeout(Duration::from_secs(20), started)
        .await
        .with_context(|| format!("{name} did not start within 20 s"))??;
    // Read on, so its log never fills the pipe and blocks it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, port))
}

/// The port in geckodriver's "Listening on 127.0.0.1:N" log line.
fn listening_on(line: &str) -> Option<u16> {
    let (_, after) = line.split_once("Listening on ")?;
    after.trim().rsplit_once(':')?.1.parse().ok()
}

/// The port in chromedriver's "ChromeDriver was started successfully on port N." line.
fn started_on(line: &str) -> Option<u16> {
    line.strip_prefix("ChromeDriver was started successfully on port ")?
        .trim_end_matches('.')
        .parse()
        .ok()
}

/// One browser session.
pub struct Browser {
    pub client: Client,
    profile: std::path::PathBuf,
    engine: Engine,
    /// The browser's own driver process, if it has one (Firefox's geckodriver; killed on
    /// drop).
    _geckodriver: Option<Child>,
}

impl Browser {
    pub fn engine(&self) -> Engine {
        self.engine
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client.goto(url).await?;
        Ok(())
    }

    /// Clicks the element matching a CSS selector, waiting up to 10 s for it to be drawn
    /// (the page draws on its next animation frame, after its state has changed).
    pub async fn click(&self, selector: &str) -> Result<()> {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(fantoccini::Locator::Css(selector))
            .await
            .with_context(|| format!("no element {selector}"))?
            .click()
            .await?;
        Ok(())
    }

    /// Runs a script and returns its value.
    pub async fn eval(&self, script: &str) -> Result<Value> {
        Ok(self.client.execute(script, vec![]).await?)
    }

    /// Runs an async script: it gets a `done(value)` callback as its last argument.
    pub async fn eval_async(&self, script: &str) -> Result<Value> {
        Ok(self.client.execute_async(script, vec![]).await?)
    }

    /// `window.quad.snapshot()`, or null before the client is up.
    pub async fn snapshot(&self) -> Result<Value> {
        self.eval("return window.quad ? window.quad.snapshot() : null")
            .await
    }

    /// Polls `window.quad.snapshot()` until `cond` holds.
    pub async fn wait_snapshot(
        &self,
        what: &str,
        cond: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        self.wait_snapshot_of(
            what,
            "return window.quad ? window.quad.snapshot() : null",
            cond,
        )
        .await
    }

    /// Polls the value of `script` until `cond` holds (30 s at most).
    pub async fn wait_snapshot_of(
        &self,
        what: &str,
        script: &str,
        cond: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        self.wait_value(what, || self.eval(script), cond).await
    }

    /// Polls the value of the async `script` (it gets a `done(value)` callback as its last
    /// argument) until `cond` holds (30 s at most).
    pub async fn wait_async_value(
        &self,
        what: &str,
        script: &str,
        cond: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        self.wait_value(what, || self.eval_async(script), cond)
            .await
    }

    /// Polls `read` every 100 ms until its value satisfies `cond` (30 s at most).
    async fn wait_value<F: std::future::Future<Output = Result<Value>>>(
        &self,
        what: &str,
        read: impl Fn() -> F,
        mut cond: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let value = read().await?;
            if cond(&value) {
                return Ok(value);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}; last value: {value}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Video frames decoded so far of what `member`'s room tile shows, from the room
    /// connection's statistics for that track (0 without a tile or track). Not
    /// `getVideoPlaybackQuality()`: headless Firefox paints no frames and counts none there.
    pub async fn tile_frames(&self, member: u64) -> Result<u64> {
        let value = self.eval_async(&tile_frames_script(member)).await?;
        Ok(value.as_u64().unwrap_or(0))
    }

    /// Touches the page at (`x`, `y`) (CSS pixels from the viewport's top left) with one
    /// finger, holds it there for `hold`, and lifts it.
    pub async fn touch_hold(&self, x: f64, y: f64, hold: Duration) -> Result<()> {
        use fantoccini::actions::{InputSource, PointerAction, TouchActions};
        let actions = TouchActions::new("finger".into())
            .then(PointerAction::MoveTo {
                duration: None,
                x,
                y,
            })
            .then(PointerAction::Down {
                button: fantoccini::actions::MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Pause { duration: hold })
            .then(PointerAction::Up {
                button: fantoccini::actions::MOUSE_BUTTON_LEFT,
            });
        self.client.perform_actions(actions).await?;
        Ok(())
    }

    /// Saves a screenshot of the page as `target/test-artifacts/<name>.png`; returns its
    /// path.
    pub async fn save_screenshot(&self, name: &str) -> Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let dir = crate::repo_root().join("target/test-artifacts");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Where the elements matching `selectors` are on screen, and what is wrong with it:
    /// `{viewport: [w, h], rects: [{name, x, y, w, h}], overlaps: ["a / b"], outside:
    /// [name]}`. Only elements that are shown count; two overlap when they share more
    /// than a pixel each way, unless one holds the other.
    pub async fn layout(&self, selectors: &[&str]) -> Result<Value> {
        let list = serde_json::to_string(selectors)?;
        self.eval(&LAYOUT.replace("SELECTORS", &list)).await
    }

    /// Holds a key (a WebDriver key value such as `\u{e015}` for ArrowDown) for `hold`.
    pub async fn hold_key(&self, key: char, hold: Duration) -> Result<()> {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let actions = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Pause { duration: hold })
            .then(KeyAction::Up { value: key });
        self.client.perform_actions(actions).await?;
        Ok(())
    }

    /// Ends the WebDriver session; `Drop` then makes sure no browser process is left.
    /// The state of the `RTCPeerConnection` with `peer`, for failure messages: signaling,
    /// ICE and connection states, descriptions and candidate pairs.
    pub async fn describe_peer(&self, peer: u64) -> String {
        let pc = format!("window.quad.peerConnection({peer})");
        let script = DESCRIBE_PEER.replace("PC", &pc);
        match self.eval_async(&script).await {
            Ok(v) => v.to_string(),
            Err(e) => format!("(could not describe peer {peer}: {e})"),
        }
    }

    /// The same of the room (SFU) connection.
    pub async fn describe_room(&self) -> String {
        let script = DESCRIBE_PEER.replace("PC", "window.quad.roomPc()");
        match self.eval_async(&script).await {
            Ok(v) => v.to_string(),
            Err(e) => format!("(could not describe the room connection: {e})"),
        }
    }

    /// Waits until the page has joined with a microphone; returns its avatar id.
    pub async fn wait_joined_with_mic(&self, who: &str) -> Result<u64> {
        let snap = self
            .wait_snapshot(&format!("{who} to join with a microphone"), |s| {
                s["self"]["id"].is_u64() && s["media"]["mic"] == true
            })
            .await?;
        Ok(snap["self"]["id"].as_u64().unwrap_or_default())
    }

    /// Waits until this page's peer connection with `peer` is connected; on timeout the
    /// error describes that connection (signaling, ICE, candidates).
    pub async fn wait_connected_to(&self, peer: u64) -> Result<()> {
        let connected = self
            .wait_snapshot(&format!("a connected peer connection with {peer}"), |s| {
                s["peers"].as_array().is_some_and(|v| {
                    v.iter()
                        .any(|p| p["id"] == peer && p["state"] == "connected")
                })
            })
            .await;
        if let Err(e) = connected {
            bail!("{e}\nthe connection: {}", self.describe_peer(peer).await);
        }
        Ok(())
    }

    /// Waits (30 s at most) until inbound audio bytes from `peer` grow past what they are
    /// now; returns the stats that showed it (see [`Self::inbound_audio`]).
    pub async fn wait_audio_rising(&self, peer: u64) -> Result<Value> {
        let bytes = |v: &Value| v["bytes"].as_f64().unwrap_or(0.0);
        let before = bytes(&self.inbound_audio(peer).await?);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stats = self.inbound_audio(peer).await?;
            if bytes(&stats) > before {
                return Ok(stats);
            }
            if Instant::now() > deadline {
                bail!("audio from {peer} is not rising: {stats}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Inbound audio bytes from `peer` and the selected candidate pair's two candidates
    /// (`{bytes, local: {address, port, type, protocol, url, relayProtocol}, remote}`).
    pub async fn inbound_audio(&self, peer: u64) -> Result<Value> {
        self.eval_async(&INBOUND_AUDIO.replace("PEER", &peer.to_string()))
            .await
    }

    /// Everything this page's connection with `peer` shows, for an error message: its
    /// states, each transceiver's direction and tracks, RTP counters both ways, the
    /// selected pair, the ICE user fragments of both descriptions and the client's own
    /// view of the link. Never fails: a page that cannot answer gives its error instead.
    pub async fn link_report(&self, peer: u64) -> Value {
        let script = LINK_REPORT.replace("PEER", &peer.to_string());
        let report =
            match tokio::time::timeout(Duration::from_secs(10), self.eval_async(&script)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => Value::String(format!("no report: {e:#}")),
                Err(_) => Value::String("no report within 10 s".into()),
            };
        let client = match self.snapshot().await {
            Ok(s) => s["peers"]
                .as_array()
                .and_then(|v| v.iter().find(|p| p["id"] == peer).cloned())
                .unwrap_or_default(),
            Err(e) => Value::String(format!("no snapshot: {e:#}")),
        };
        serde_json::json!({"connection": report, "client": client})
    }

    /// What this page's room (SFU) connection receives: inbound audio bytes per forwarded
    /// stream id (`"<avatar>:mic"`, read from the m-sections' `a=msid`), the connection's
    /// state and the selected candidate pair's two candidates. Null outside a room.
    pub async fn room_inbound(&self) -> Result<Value> {
        self.eval_async(ROOM_INBOUND).await
    }

    /// The room connection's descriptions: `{local, remote}` SDP (the remote one is the
    /// server's latest). Null outside a room.
    pub async fn room_descriptions(&self) -> Result<Value> {
        self.eval(
            "const pc = window.quad && window.quad.roomPc(); \
             return pc && pc.remoteDescription && pc.localDescription \
               ? {local: pc.localDescription.sdp, remote: pc.remoteDescription.sdp} : null",
        )
        .await
    }

    /// Waits (`within` at most) until this page's room connection receives rising audio
    /// from every one of `from`'s microphones; what [`Self::room_inbound`] then shows.
    /// `who` names the page in the error.
    pub async fn wait_room_hearing(
        &self,
        who: &str,
        from: &[u64],
        within: Duration,
    ) -> Result<Value> {
        let deadline = Instant::now() + within;
        let first = self.room_inbound().await?;
        loop {
            let now = self.room_inbound().await?;
            let rising = |id: &u64| {
                let key = format!("{id}:mic");
                now["streams"][&key].as_f64().unwrap_or(0.0)
                    > first["streams"][&key].as_f64().unwrap_or(0.0)
            };
            if from.iter().all(rising) {
                return Ok(now);
            }
            if Instant::now() > deadline {
                bail!("{who} does not hear all of {from:?} in the room: {now}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Audio bytes this page's room connection has received from `member`'s microphone.
    pub async fn room_audio_from(&self, member: u64) -> Result<f64> {
        let stats = self.room_inbound().await?;
        Ok(stats["streams"][format!("{member}:mic")]
            .as_f64()
            .unwrap_or(0.0))
    }

    pub async fn close(self) -> Result<()> {
        self.client.clone().close().await?;
        Ok(())
    }
}

/// The async script that reads [`Browser::tile_frames`] of `member`, for
/// [`Browser::wait_async_value`].
pub fn tile_frames_script(member: u64) -> String {
    TILE_FRAMES.replace("MEMBER", &member.to_string())
}

/// An async script: the frames decoded of the video in MEMBER's room tile.
const TILE_FRAMES: &str = r#"
const done = arguments[arguments.length - 1];
const v = document.querySelector('#room-tiles [data-member="MEMBER"] video');
const pc = window.quad && window.quad.roomPc();
const track = v && v.srcObject && v.srcObject.getVideoTracks()[0];
if (!track || !pc) { done(0); return; }
pc.getStats(track).then(report => {
  let frames = 0;
  report.forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'video') frames = Math.max(frames, s.framesDecoded || 0); });
  done(frames);
}, () => done(0));
"#;

/// An async script: [`Browser::link_report`]'s view of the connection with PEER.
const LINK_REPORT: &str = r#"
const peer = PEER, done = arguments[arguments.length - 1];
const pc = window.quad.peerConnection(peer);
if (!pc) { done(null); return; }
const ufrags = d => d ? (d.sdp.match(/a=ice-ufrag:\S+/g) || []).join(' ') + ' ' + d.type : null;
const track = t => t ? {kind: t.kind, readyState: t.readyState, enabled: t.enabled, muted: t.muted} : null;
const out = {
  state: pc.connectionState, ice: pc.iceConnectionState, signaling: pc.signalingState,
  local: ufrags(pc.currentLocalDescription), remote: ufrags(pc.currentRemoteDescription),
  transceivers: pc.getTransceivers().map(t => ({mid: t.mid, direction: t.direction, current: t.currentDirection, stopped: t.stopped, send: track(t.sender.track), receive: track(t.receiver.track)})),
  rtp: [], pairs: [],
};
const settle = Promise.race([pc.getStats(), new Promise(r => setTimeout(() => r(null), 5000))]);
settle.then(report => {
  if (report) report.forEach(s => {
    if (s.type === 'inbound-rtp' || s.type === 'outbound-rtp') out.rtp.push({type: s.type, kind: s.kind, ssrc: s.ssrc, bytes: s.bytesReceived ?? s.bytesSent, packets: s.packetsReceived ?? s.packetsSent, lost: s.packetsLost});
    if (s.type === 'candidate-pair' && (s.nominated || s.selected)) out.pairs.push({state: s.state, nominated: s.nominated, selected: s.selected, sent: s.bytesSent, received: s.bytesReceived});
  });
  else out.stats = 'getStats() did not answer in 5 s';
  done(out);
}, e => { out.stats = String(e); done(out); });
"#;

/// Inbound audio bytes from the peer and the selected candidate pair, seen by this page.
const INBOUND_AUDIO: &str = r#"
const peer = PEER, done = arguments[arguments.length - 1];
const pc = window.quad.peerConnection(peer);
if (!pc) { done(null); return; }
pc.getStats().then(report => {
  let bytes = 0, pair = null;
  const byId = new Map();
  report.forEach(s => byId.set(s.id, s));
  report.forEach(s => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') bytes += s.bytesReceived || 0;
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId);
  });
  if (!pair) report.forEach(s => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
  const cand = id => { const c = id && byId.get(id); return c ? {address: c.address, port: c.port, type: c.candidateType, protocol: c.protocol, url: c.url, relayProtocol: c.relayProtocol} : null; };
  done({bytes, local: pair && cand(pair.localCandidateId), remote: pair && cand(pair.remoteCandidateId)});
});
"#;

/// Inbound audio per forwarded stream on the room connection, and its selected pair.
const ROOM_INBOUND: &str = r#"
const done = arguments[arguments.length - 1];
const pc = window.quad && window.quad.roomPc();
if (!pc || !pc.remoteDescription) { done(null); return; }
const streamOfMid = new Map();
for (const section of pc.remoteDescription.sdp.split('\r\nm=').slice(1)) {
  const mid = /a=mid:(\S+)/.exec(section), msid = /a=msid:(\S+)/.exec(section);
  if (mid && msid) streamOfMid.set(mid[1], msid[1]);
}
pc.getStats().then(report => {
  const streams = {}, byId = new Map();
  let pair = null;
  report.forEach(s => byId.set(s.id, s));
  report.forEach(s => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      const stream = streamOfMid.get(s.mid) || ('mid ' + s.mid);
      streams[stream] = (streams[stream] || 0) + (s.bytesReceived || 0);
    }
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId);
  });
  const cand = id => { const c = id && byId.get(id); return c ? {address: c.address, port: c.port, type: c.candidateType, protocol: c.protocol} : null; };
  done({state: pc.connectionState, streams, local: pair && cand(pair.localCandidateId), remote: pair && cand(pair.remoteCandidateId)});
}, () => done(null));
"#;

const LAYOUT: &str = r##"
const shown = e => {
  const cs = getComputedStyle(e), r = e.getBoundingClientRect();
  return !e.closest("[hidden]") && cs.display !== "none" && cs.visibility !== "hidden"
    && r.width > 0 && r.height > 0;
};
const els = SELECTORS.flatMap(s => [...document.querySelectorAll(s)]).filter(shown);
const name = e => e.id ? "#" + e.id
  : e.tagName.toLowerCase() + " \"" + e.textContent.trim().slice(0, 24) + "\"";
const rects = els.map(e => { const r = e.getBoundingClientRect();
  return { name: name(e), x: r.left, y: r.top, w: r.width, h: r.height }; });
const overlaps = [];
for (let i = 0; i < els.length; i++) for (let j = i + 1; j < els.length; j++) {
  if (els[i].contains(els[j]) || els[j].contains(els[i])) continue;
  const a = rects[i], b = rects[j];
  const dx = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
  const dy = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
  if (dx > 1 && dy > 1) overlaps.push(a.name + " / " + b.name);
}
const outside = rects.filter(r => r.x < -0.5 || r.y < -0.5 || r.x + r.w > innerWidth + 0.5
  || r.y + r.h > innerHeight + 0.5).map(r => r.name);
return { viewport: [innerWidth, innerHeight], rects, overlaps, outside };
"##;

const DESCRIBE_PEER: &str = r#"
const done = arguments[arguments.length - 1];
const pc = window.quad && PC;
if (!pc) { done(null); return; }
const out = {
  signaling: pc.signalingState, ice: pc.iceConnectionState,
  gathering: pc.iceGatheringState, connection: pc.connectionState,
  local: pc.localDescription && pc.localDescription.type,
  remote: pc.remoteDescription && pc.remoteDescription.type,
  transceivers: pc.getTransceivers().map(t => `${t.mid}:${t.direction}/${t.currentDirection}`),
};
pc.getStats().then(stats => {
  out.candidates = [];
  stats.forEach(s => {
    if (s.type === "local-candidate" || s.type === "remote-candidate")
      out.candidates.push(`${s.type}:${s.candidateType}:${s.address}:${s.port}`);
    if (s.type === "candidate-pair")
      out.candidates.push(`pair:${s.state}:${s.nominated}`);
  });
  done(out);
}, () => done(out));
"#;

impl Drop for Browser {
    /// A failing test never reaches `close()`, and killing chromedriver orphans the browsers
    /// it started, which then keep rendering and load the machine. Every process of this
    /// browser has its unique profile directory on its command line (Firefox's content
    /// processes name the parent's, whose own line has the directory).
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill")
            .args(["-KILL", "-f", "--"])
            .arg(self.profile.display().to_string())
            .status();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Whether a candidate of a selected pair (as [`Browser::inbound_audio`] gives it) is the
/// other browser itself, not a relay: its host candidate, or a peer-reflexive one when a
/// connectivity check from it arrived before its trickled candidate did (the page handles
/// signals in order, so a candidate can wait behind a description).
pub fn is_direct(candidate: &Value) -> bool {
    candidate["type"] == "host" || candidate["type"] == "prflx"
}

/// Two pages linked in the hallway: Alice and Bob, joined with microphones 40 px apart
/// beside the campus's spawn, on a test server of their own.
pub struct HallwayPair {
    pub a: Browser,
    pub b: Browser,
    pub a_id: u64,
    pub b_id: u64,
    /// Where Alice was placed (Bob is 40 px below).
    pub a_at: glam::Vec2,
    /// Kept for as long as the pages (dropped after them).
    pub driver: Driver,
    pub server: crate::TestServer,
}

/// Starts a server and `engine`'s driver and opens a [`HallwayPair`] (after checking that
/// the client bundle is built).
pub async fn hallway_pair(engine: Engine) -> Result<HallwayPair> {
    require_client_bundle()?;
    let server = crate::TestServer::start().await?;
    let driver = Driver::start_engine(engine).await?;
    let a_at = crate::campus().spawn + glam::Vec2::new(-144.0, 0.0);
    let a = driver.browser().await?;
    let b = driver.browser().await?;
    for (page, name, dy) in [(&a, "Alice", 0.0), (&b, "Bob", 40.0)] {
        page.goto(&format!(
            "{}/?name={name}&spawn={},{}",
            server.url(),
            a_at.x,
            a_at.y + dy
        ))
        .await?;
    }
    let a_id = a.wait_joined_with_mic("A").await?;
    let b_id = b.wait_joined_with_mic("B").await?;
    Ok(HallwayPair {
        a,
        b,
        a_id,
        b_id,
        a_at,
        driver,
        server,
    })
}

/// Fails with a clear message when the wasm client has not been built.
pub fn require_client_bundle() -> Result<()> {
    let dir = crate::client_dir();
    if !dir.join("quad_client_bg.wasm").is_file() {
        bail!(
            "the wasm client is not built in {}: run `cargo xtask test` (or `cargo xtask client`)",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_port_chromedriver_started_on() {
        let line = "ChromeDriver was started successfully on port 41237.";
        assert_eq!(super::started_on(line), Some(41237));
        assert_eq!(
            super::started_on("Starting ChromeDriver 156.0 on port 0"),
            None
        );
        assert_eq!(
            super::started_on("ChromeDriver was started successfully on port x."),
            None
        );
    }

    #[test]
    fn reads_the_port_geckodriver_listens_on() {
        let line = "1733400000000\tgeckodriver\tINFO\tListening on 127.0.0.1:40113";
        assert_eq!(super::listening_on(line), Some(40113));
        assert_eq!(super::listening_on("geckodriver\tINFO\tstarting"), None);
    }
}
