//! The SRTP keys of what the SFU sends one member, learnt as the connection makes them, so
//! that forwarded packets can be encrypted and sent by Quad itself ([`super::direct`])
//! rather than by webrtc-rs's per-packet pipeline.
//!
//! webrtc-rs derives the keys inside its DTLS handler and keeps them there. What it does let
//! an application choose is the crypto provider a connection uses, and SRTP's key
//! derivation (RFC 3711 §4.3, the same for the AES-CM and AES-GCM profiles) is the only
//! thing in it that calls the provider's single-block AES: each call is keyed with a
//! master key, and the first one of a context encrypts the block that starts with the
//! master salt (label 0, counter 0). [`KeyCapture`] is the default provider with that call
//! watched: it notes the first block of each new master key, and which kind of cipher the
//! context then asks for (AEAD for AES-GCM, a stream cipher for AES-CM). The connection
//! builds its sending context first and its receiving context second
//! (`DtlsHandler::update_srtp_contexts`), so the first key is the sending one.
//!
//! The connection offers only the 128-bit profiles (see [`PROFILES`]), whose key derivation
//! is the one watched here. The unit tests build real contexts through the provider and
//! check that packets encrypted with the keys it learnt decrypt with the originals, so a
//! webrtc-rs release that derives keys another way fails them rather than the calls.

use rtc::crypto::{
    AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CbcAlgorithm, CbcCipher, CryptoAlgorithm,
    CryptoError, HashAlgorithm, HmacAlgorithm, KeyExchangeAlgorithm, Mac, PublicKey, RTCCrypto,
    RTCCryptoProvider, RTCRandom, SignatureScheme, SigningKey, StreamCipher, StreamCipherAlgorithm,
};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use std::sync::{Arc, Mutex};

/// The SRTP profiles an SFU connection offers: AES-GCM first (one pass over the packet),
/// AES-CM with an 80-bit tag for browsers without it.
pub const PROFILES: [SrtpProtectionProfile; 2] = [
    SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
    SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
];

/// The two SRTP profiles of [`PROFILES`], as the keys name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    AesGcm128,
    AesCm128HmacSha1_80,
}

impl Profile {
    pub fn protection_profile(self) -> ProtectionProfile {
        match self {
            Profile::AesGcm128 => ProtectionProfile::AeadAes128Gcm,
            Profile::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        }
    }
}

/// One SRTP context's master key and salt.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub profile: Profile,
    pub master_key: Vec<u8>,
    pub master_salt: Vec<u8>,
}

impl SrtpKeys {
    /// An SRTP context for these keys, its ciphers from `crypto`.
    pub fn context(&self, crypto: &dyn RTCCrypto) -> rtc::shared::error::Result<Context> {
        Context::new(
            &self.master_key,
            &self.master_salt,
            self.profile.protection_profile(),
            None,
            None,
            crypto,
        )
    }
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// A master key seen in a key derivation, before the context's cipher kind is known.
struct Derivation {
    master_key: Vec<u8>,
    /// The first block encrypted with it: the master salt, zero-padded, label 0.
    first_block: [u8; 16],
    profile: Option<Profile>,
}

/// What the watched calls have shown so far, for one connection.
#[derive(Default)]
struct Seen {
    derivations: Vec<Derivation>,
}

/// How many contexts a connection makes (sending and receiving); the watch stops after.
const CONTEXTS: usize = 2;

impl Seen {
    fn on_block(&mut self, algorithm: BlockCipherAlgorithm, key: &[u8], block: &[u8]) {
        if algorithm != BlockCipherAlgorithm::Aes128 || key.len() != 16 || block.len() != 16 {
            return;
        }
        if self.derivations.iter().any(|d| d.master_key == key)
            || self.derivations.len() >= CONTEXTS
        {
            return;
        }
        let mut first_block = [0; 16];
        first_block.copy_from_slice(block);
        self.derivations.push(Derivation {
            master_key: key.to_vec(),
            first_block,
            profile: None,
        });
    }

    /// The newest derivation learns its profile from the first cipher its context asks for.
    fn on_cipher(&mut self, profile: Profile) {
        if let Some(last) = self.derivations.last_mut()
            && last.profile.is_none()
        {
            last.profile = Some(profile);
        }
    }

    fn keys(&self, index: usize) -> Option<SrtpKeys> {
        let derivation = self.derivations.get(index)?;
        let profile = derivation.profile?;
        let salt_len = profile.protection_profile().salt_len();
        Some(SrtpKeys {
            profile,
            master_key: derivation.master_key.clone(),
            master_salt: derivation.first_block[..salt_len].to_vec(),
        })
    }
}

/// The default crypto provider, watching for SRTP keys (see the module docs). One per
/// connection.
pub struct KeyCapture {
    crypto: Watched,
}

struct Watched {
    inner: Arc<dyn RTCCryptoProvider>,
    seen: Mutex<Seen>,
}

impl KeyCapture {
    pub fn new() -> Result<Arc<KeyCapture>, CryptoError> {
        Ok(Arc::new(KeyCapture {
            crypto: Watched {
                inner: rtc::crypto::default_provider()?,
                seen: Mutex::new(Seen::default()),
            },
        }))
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // Plain data: a panic elsewhere while it was held leaves nothing half-done.
        self.crypto.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The keys of the connection's sending context, once its DTLS handshake made them.
    pub fn sending(&self) -> Option<SrtpKeys> {
        self.seen().keys(0)
    }

    /// The keys of its receiving context (for tests: they prove which one came first).
    #[cfg(test)]
    pub fn receiving(&self) -> Option<SrtpKeys> {
        self.seen().keys(1)
    }
}

impl RTCCryptoProvider for KeyCapture {
    fn name(&self) -> &'static str {
        "quad-key-capture"
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        &self.crypto
    }

    fn random(&self) -> &dyn RTCRandom {
        self.crypto.inner.random()
    }
}

impl Watched {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // Plain data, as above.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RTCCrypto for Watched {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.inner.crypto().supports(algorithm)
    }

    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.crypto().hash(algorithm, data)
    }

    fn block_encrypt(
        &self,
        algorithm: BlockCipherAlgorithm,
        key: &[u8],
        block: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.seen().on_block(algorithm, key, block);
        self.inner.crypto().block_encrypt(algorithm, key, block)
    }

    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        self.inner.crypto().new_hmac(algorithm, key)
    }

    fn new_stream_cipher(
        &self,
        algorithm: StreamCipherAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn StreamCipher>, CryptoError> {
        if algorithm == StreamCipherAlgorithm::Aes128Ctr {
            self.seen().on_cipher(Profile::AesCm128HmacSha1_80);
        }
        self.inner.crypto().new_stream_cipher(algorithm, key)
    }

    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn AeadCipher>, CryptoError> {
        if algorithm == AeadAlgorithm::Aes128Gcm {
            self.seen().on_cipher(Profile::AesGcm128);
        }
        self.inner.crypto().new_aead(algorithm, key)
    }

    fn new_cbc(
        &self,
        algorithm: CbcAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.inner.crypto().new_cbc(algorithm, key)
    }

    fn start_key_exchange(
        &self,
        algorithm: KeyExchangeAlgorithm,
    ) -> Result<Box<dyn rtc::crypto::ActiveKeyExchange>, CryptoError> {
        self.inner.crypto().start_key_exchange(algorithm)
    }

    fn generate_signing_key(
        &self,
        scheme: SignatureScheme,
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().generate_signing_key(scheme)
    }

    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().import_signing_key(scheme, pkcs8_der)
    }

    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.inner
            .crypto()
            .verify_signature(scheme, public_key, message, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(keys: &SrtpKeys, crypto: &dyn RTCCrypto) -> Context {
        keys.context(crypto).expect("a context")
    }

    fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
        use rtc::shared::marshal::Marshal;
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: 111,
                sequence_number: seq,
                timestamp: 960 * seq as u32,
                ssrc,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(b"an opus frame"),
        };
        packet.marshal().expect("marshals").to_vec()
    }

    fn keys(profile: Profile, fill: u8) -> SrtpKeys {
        SrtpKeys {
            profile,
            master_key: (0..16).map(|i| fill.wrapping_add(i)).collect(),
            master_salt: (0..profile.protection_profile().salt_len() as u8)
                .map(|i| fill ^ i.wrapping_mul(7))
                .collect(),
        }
    }

    #[test]
    fn keys_are_learnt_from_the_contexts_a_connection_makes_in_order() {
        for profile in [Profile::AesGcm128, Profile::AesCm128HmacSha1_80] {
            let capture = KeyCapture::new().expect("a provider");
            assert!(capture.sending().is_none(), "nothing before a handshake");
            let sending = keys(profile, 0x30);
            let receiving = keys(profile, 0x90);
            // As the DTLS handler does: the sending context first.
            let mut theirs_to_us = context(&sending, capture.crypto());
            let _ = context(&receiving, capture.crypto());
            assert_eq!(capture.sending(), Some(sending.clone()), "{profile:?}");
            assert_eq!(capture.receiving(), Some(receiving), "{profile:?}");

            // What Quad encrypts with the learnt keys, the browser (holding the real ones)
            // decrypts, packet after packet.
            let learnt = capture.sending().expect("learnt");
            let plain = rtc::crypto::default_provider().expect("a provider");
            let mut ours = context(&learnt, plain.crypto());
            let mut browser = context(&sending, plain.crypto());
            for seq in [65_534, 65_535, 0, 1] {
                let packet = rtp(0x1234, seq);
                let sealed = ours.encrypt_rtp(&packet).expect("encrypts");
                assert_ne!(&sealed[12..], &packet[12..], "the payload is encrypted");
                let opened = browser.decrypt_rtp(&sealed).expect("decrypts");
                assert_eq!(&opened[..], &packet[..]);
            }
            // The connection's own context (built through the watched provider) still works.
            let sealed = theirs_to_us.encrypt_rtp(&rtp(7, 1)).expect("encrypts");
            assert!(browser.decrypt_rtp(&sealed).is_ok());
        }
    }

    #[test]
    fn other_block_encryptions_after_both_contexts_change_nothing() {
        let capture = KeyCapture::new().expect("a provider");
        let sending = keys(Profile::AesGcm128, 1);
        let receiving = keys(Profile::AesGcm128, 2);
        let _ = context(&sending, capture.crypto());
        let _ = context(&receiving, capture.crypto());
        let _ = context(&keys(Profile::AesGcm128, 3), capture.crypto());
        assert_eq!(capture.sending(), Some(sending));
        assert_eq!(capture.receiving(), Some(receiving));
    }
}
