// Starts the wasm client. A file rather than an inline script: the page's
// Content-Security-Policy allows only scripts served by Quad itself.
import init from "/pkg/quad_client.js";
init({ module_or_path: "/pkg/quad_client_bg.wasm" });

// Browsers give the microphone and camera only to secure contexts: https://, or this
// computer (localhost). Opened over plain http from elsewhere, the page says why its
// devices will not work, and what fixes it, before anyone joins.
if (!window.isSecureContext) {
  const warning = document.getElementById("lobby-insecure");
  const https = "https://" + location.host + location.pathname + location.search;
  warning.textContent =
    "This page was opened over plain http from " + location.host + ", so your browser " +
    "will not let it use your microphone or camera: you could walk and chat, but not be " +
    "heard or seen. Open " + https + " instead. If that does not answer, the campus " +
    "runs without HTTPS: its operator turns it on with --tls-cert and --tls-key (or " +
    "--tls-self-signed for a trial).";
  warning.hidden = false;
}

// Without WebRTC the page can walk and chat, but not hear or be heard: say so up front.
if (!("RTCPeerConnection" in window)) {
  document.getElementById("lobby-no-webrtc").hidden = false;
}
