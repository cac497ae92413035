// Starts the wasm client. A file rather than an inline script: the page's
// Content-Security-Policy allows only scripts served by Quad itself.
import init from "/pkg/quad_client.js";
init({ module_or_path: "/pkg/quad_client_bg.wasm" });
