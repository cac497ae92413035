//! Browser tests: headless Chromium driven over WebDriver (chromedriver), with the flags that
//! work on these machines (why each is there: `docs/architecture.md`, "Browser tests") and
//! fake media devices.
//! Missing Chromium is an error that says how to install it, never a skip.

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

/// A chromedriver process on a free loopback port; killed on drop.
pub struct Driver {
    _child: Child,
    url: String,
    /// More Chromium flags for every browser of this driver.
    extra_args: Vec<String>,
}

impl Driver {
    pub async fn start() -> Result<Driver> {
        Self::start_with(Command::new(CHROMEDRIVER), None).await
    }

    /// A chromedriver (and so its browsers) inside a site of a test network, reached
    /// through a forwarded port.
    pub async fn start_in(lab: &crate::netlab::Lab, site: crate::netlab::Site) -> Result<Driver> {
        Self::start_with(lab.command(site, CHROMEDRIVER), Some((lab, site))).await
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
        let _ = rustls::crypto::ring::default_provider().install_default();
        for bin in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(bin).exists() {
                bail!(
                    "{bin} is missing: `cargo xtask test` installs it, or run `apt-get install -y chromium chromium-driver`"
                );
            }
        }
        // Port 0: chromedriver binds a free port itself and says which on stdout. (Probing
        // for a free port first raced with the other tests binding ports in between: once
        // chromedriver lost its port and the session went to nobody.)
        let mut child = command
            .arg("--port=0")
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver")?;
        let stdout = child.stdout.take().context("chromedriver's stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let started = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(port) = started_on(&line) {
                    return Ok(port);
                }
            }
            bail!("chromedriver exited before it started")
        };
        let port = tokio::time::timeout(Duration::from_secs(20), started)
            .await
            .context("chromedriver did not start within 20 s")??;
        // Read on, so its log never fills the pipe and blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let addr = match lab {
            Some((lab, site)) => lab.forward(site, addr).await?,
            None => addr,
        };
        Ok(Driver {
            _child: child,
            url: format!("http://{addr}"),
            extra_args: Vec::new(),
        })
    }

    /// A new browser with a fresh profile and fake camera and microphone.
    pub async fn browser(&self) -> Result<Browser> {
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
        let Value::Object(caps) = caps else {
            bail!("capabilities are an object");
        };
        let client = ClientBuilder::rustls()?
            .capabilities(caps)
            .connect(&self.url)
            .await
            .context("new WebDriver session")?;
        Ok(Browser { client, profile })
    }
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
}

impl Browser {
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
        mut cond: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let snap = self.eval(script).await?;
            if cond(&snap) {
                return Ok(snap);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}; last snapshot: {snap}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
        let script = DESCRIBE_PEER.replace("PEER", &peer.to_string());
        match self.eval_async(&script).await {
            Ok(v) => v.to_string(),
            Err(e) => format!("(could not describe peer {peer}: {e})"),
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

const DESCRIBE_PEER: &str = r#"
const done = arguments[arguments.length - 1];
const pc = window.quad && window.quad.peerConnection(PEER);
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
    /// browser has its unique profile directory on its command line.
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill")
            .args(["-KILL", "-f", "--"])
            .arg(format!("user-data-dir={}", self.profile.display()))
            .status();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
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
}
