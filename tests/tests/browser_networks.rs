//! Quad across real networks, in a test network of namespaces (`quad_tests::netlab`): the
//! server on its own address in `school`, over HTTPS with its self-signed certificate
//! (browsers are told its public key); browsers in `home1` and `home2` behind masquerading
//! NAT; and one in `strict`, whose firewall lets out only TCP to the server's TLS port.
//!
//! - home1 and home2 walk, and hear each other in the hallway, over whatever candidates
//!   ICE picks across the two NATs;
//! - strict hears and is heard in the hallway, over TURN over TLS on port 443;
//! - all three hear each other in a classroom, strict again through TURN over TLS, all on
//!   the one media port; and
//! - a page opened over plain http from another machine says why the microphone will not
//!   work, and how to fix it.
//!
//! The server is the real binary, started the way a user starts it, with a host name
//! (`public_url`) for TURN over TLS: Firefox uses `turns:` only by name. The lab has no
//! DNS, so each browser is told the name's address. The test runs once in Chromium and
//! once in Firefox, every browser of the network in the same engine.

use anyhow::{Context, Result};
use quad_tests::browser::{Browser, Driver, Engine, require_client_bundle};
use quad_tests::netlab::{INTERNET, Lab, SCHOOL_IP, Site};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The school server's name, for TURN over TLS (the lab has no DNS: Firefox is told its
/// address).
const SCHOOL_NAME: &str = "quad.school.test";

/// Starts the server in `school` on `listen` (with `--tls-self-signed` when `tls`);
/// returns the process and, with TLS, the certificate's public-key hash it printed.
async fn start_server(
    lab: &Lab,
    data: &std::path::Path,
    listen: &str,
    tls: bool,
    more_config: &str,
) -> Result<(tokio::process::Child, Option<String>)> {
    std::fs::create_dir_all(data)?;
    let config = data.join("quad.toml");
    // The lab's internet is a private range: the server is told it is public.
    std::fs::write(
        &config,
        format!("allowed_peer_ranges = [\"{INTERNET}\"]\n{more_config}"),
    )?;
    let mut command = lab.command(Site::School, quad_tests::server_binary()?);
    command
        .current_dir(quad_tests::repo_root())
        .args(["--listen", listen, "--dev"])
        .arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(&config)
        .arg("--client-dir")
        .arg(quad_tests::client_dir());
    if tls {
        command.arg("--tls-self-signed");
    }
    let (child, serving) = quad_tests::spawn_server(&mut command)
        .await
        .context("starting quad-server in the school")?;
    Ok((child, serving.spki))
}

async fn open(b: &Browser, name: &str, at: [f32; 2]) -> Result<u64> {
    b.goto(&format!(
        "https://{SCHOOL_IP}/?name={name}&spawn={},{}",
        at[0], at[1]
    ))
    .await?;
    b.wait_joined_with_mic(name).await
}

/// How long a page may take to hear a room across the test network.
const ROOM_PATIENCE: Duration = Duration::from_secs(40);

fn is_private_lan(address: &Value) -> bool {
    address.as_str().is_some_and(|a| a.starts_with("192.168."))
}

quad_tests::in_each_engine!(browsers_behind_nat_and_a_strict_firewall_hear_each_other_over_https);

/// The two engines' runs take turns: each builds a lab and serves port 443 in it.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn browsers_behind_nat_and_a_strict_firewall_hear_each_other_over_https(
    engine: Engine,
) -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    require_client_bundle()?;
    let lab = Lab::build()?;
    let data = quad_tests::temp_dir("netlab-server");
    // Reached by name for TURN over TLS (Firefox takes a TLS TURN server by name only);
    // the lab has no DNS, so Firefox is told the name's address (`forceResolve`).
    let (mut server, spki) = start_server(
        &lab,
        &data,
        &format!("{SCHOOL_IP}:443"),
        true,
        &format!("public_url = \"https://{SCHOOL_NAME}\"\n"),
    )
    .await?;
    let spki = spki.context("no public-key hash printed")?;
    let trust = vec![
        format!("--ignore-certificate-errors-spki-list={spki}"),
        // The lab has no DNS and no proxy: the pages use the server's address. Without
        // these, a browser behind the strict firewall (which drops what it does not let
        // out) waited about 14 s for name and proxy lookups before its first navigation.
        format!(
            "--host-resolver-rules=MAP {SCHOOL_NAME} {SCHOOL_IP}, MAP * ~NOTFOUND, EXCLUDE {SCHOOL_IP}, EXCLUDE localhost"
        ),
        "--no-proxy-server".to_owned(),
    ];
    let home1 = Driver::start_engine_in(engine, &lab, Site::Home1)
        .await?
        .with_args(trust.clone());
    let home2 = Driver::start_engine_in(engine, &lab, Site::Home2)
        .await?
        .with_args(trust.clone());
    // Behind the strict firewall, the same engine: Firefox trusts the self-signed server
    // for TURN over TLS through its profile's own store, and finds it by name.
    let strict = Driver::start_engine_in(engine, &lab, Site::Strict)
        .await?
        .with_args(trust)
        .with_firefox(
            serde_json::json!({ "network.dns.forceResolve": SCHOOL_IP.to_string() }),
            Some(data.join(quad_server::tls::SELF_SIGNED_CERT)),
        );

    // The hallway, across two NATs.
    let spawn = quad_tests::campus().spawn;
    let hall = |dy: f32| [spawn.x - 144.0, spawn.y + dy];
    let (ana, ben) = (home1.browser().await?, home2.browser().await?);
    let t = Instant::now();
    let ana_id = open(&ana, "Ana", hall(0.0)).await?;
    println!("home1 joined after {:.1} s", t.elapsed().as_secs_f64());
    let ben_id = open(&ben, "Ben", hall(60.0)).await?;
    ben.wait_connected_to(ana_id).await?;
    let heard = ben.wait_audio_rising(ana_id).await?;
    ana.wait_audio_rising(ben_id).await?;
    println!("home2 hears home1 over {heard}");
    // Neither home's own address is reachable from the other: what ICE found crosses NAT.
    assert!(!is_private_lan(&heard["remote"]["address"]), "{heard}");

    // The strict network: only TCP to the server's TLS port, so TURN over TLS.
    let sol = strict.browser().await?;
    let opened = Instant::now();
    let sol_id = open(&sol, "Sol", hall(-60.0)).await?;
    let joined = opened.elapsed();
    sol.wait_connected_to(ana_id).await?;
    let connected = opened.elapsed();
    let heard = sol.wait_audio_rising(ana_id).await?;
    println!(
        "strict: joined after {:.1} s, connected to home1 after {:.1} s",
        joined.as_secs_f64(),
        connected.as_secs_f64()
    );
    ana.wait_audio_rising(sol_id).await?;
    println!(
        "strict hears home1 {:.1} s after opening the page, over {heard}",
        opened.elapsed().as_secs_f64()
    );
    assert_eq!(heard["local"]["type"], "relay", "{heard}");
    assert_eq!(heard["local"]["relayProtocol"], "tls", "{heard}");
    // The `turns:` URL by name (Chromium says which URL; Firefox leaves it out of its
    // stats, and its relay's protocol above is the proof).
    assert!(
        heard["local"]["url"].is_null()
            || heard["local"]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with(&format!("turns:{SCHOOL_NAME}:443"))),
        "{heard}"
    );

    // A classroom: the three come in, and hear each other through the server.
    let room = [[224.0, 280.0], [120.0, 176.0], [160.0, 240.0]];
    let ana_id = open(&ana, "Ana", room[0]).await?;
    let ben_id = open(&ben, "Ben", room[1]).await?;
    let opened = Instant::now();
    let sol_id = open(&sol, "Sol", room[2]).await?;
    let sol_hears = sol
        .wait_room_hearing("Sol", &[ana_id, ben_id], ROOM_PATIENCE)
        .await?;
    println!(
        "strict hears the room {:.1} s after opening the page, over {sol_hears}",
        opened.elapsed().as_secs_f64()
    );
    assert_eq!(sol_hears["local"]["type"], "relay", "{sol_hears}");
    let ana_hears = ana
        .wait_room_hearing("Ana", &[ben_id, sol_id], ROOM_PATIENCE)
        .await?;
    ben.wait_room_hearing("Ben", &[ana_id, sol_id], ROOM_PATIENCE)
        .await?;
    assert_eq!(
        ana_hears["remote"]["address"],
        SCHOOL_IP.to_string(),
        "{ana_hears}"
    );
    // All of the room's media comes and goes through the one media port.
    assert_eq!(sol_hears["remote"]["port"], ana_hears["remote"]["port"]);

    // Page open to first room audio behind the strict firewall, over TURN/TLS: the page
    // opened again five times (each a new session and a new room connection).
    let mut times = Vec::new();
    for _ in 0..5 {
        let opened = Instant::now();
        open(&sol, "Sol", room[2]).await?;
        let heard = sol
            .wait_room_hearing("Sol", &[ana_id, ben_id], ROOM_PATIENCE)
            .await?;
        assert_eq!(heard["local"]["type"], "relay", "{heard}");
        times.push(opened.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "strict, page open to first room audio over TURN/TLS: median {:.2} s of {times:.2?}",
        times[times.len() / 2]
    );

    // The same campus over plain http from another machine: the page says why the
    // microphone will not work, and how to fix it, before anyone joins.
    let plain_data = quad_tests::temp_dir("netlab-plain");
    let (mut plain, _) = start_server(
        &lab,
        &plain_data,
        &format!("{SCHOOL_IP}:8080"),
        false,
        // Beside the first server: no TURN, and a media port of its own.
        "turn = false\nmedia_port = 0\n",
    )
    .await?;
    ben.goto(&format!("http://{SCHOOL_IP}:8080/")).await?;
    let warning = ben
        .eval(
            "const w = document.getElementById('lobby-insecure'); \
             return {secure: window.isSecureContext, hidden: w.hidden, text: w.textContent};",
        )
        .await?;
    assert_eq!(warning["secure"], false, "{warning}");
    assert_eq!(warning["hidden"], false, "{warning}");
    let text = warning["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("microphone") && text.contains(&format!("https://{SCHOOL_IP}:8080/")),
        "{warning}"
    );
    // Over HTTPS the warning stays hidden.
    let secure = ana
        .eval("return document.getElementById('lobby-insecure').hidden;")
        .await?;
    assert_eq!(secure, true);
    let _ = plain.kill().await;
    let _ = std::fs::remove_dir_all(&plain_data);

    for b in [ana, ben, sol] {
        b.close().await?;
    }
    let _ = server.kill().await;
    let _ = std::fs::remove_dir_all(&data);
    drop(lab);
    Ok(())
}
