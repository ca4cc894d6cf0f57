//! The test vector of `docs/envelope.md`, read from the doc itself (its fenced blocks
//! tagged `test-vector-*`), so the doc and the code cannot drift apart:
//!
//! (a) an implementation written here from the doc's description alone (AAD layout,
//!     AES-256-GCM through aws-lc-rs, the local keyring's wrap, padded standard
//!     base64) reproduces the doc's intermediate values and blob exactly;
//! (b) the crate's `Keyring::open` opens the doc's blob to the doc's plaintext, and
//!     refuses it under another org's context or another version;
//! (c) the crate's own sealing, given the vector's data key and nonces, writes the
//!     doc's blob byte for byte.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use shared::envelope::{CryptoError, EncryptionContext, Envelope, Keyring, LocalKeyring};
use shared::ids::{OrgId, Provider};
use uuid::Uuid;
use zeroize::Zeroizing;

const DOC: &str = include_str!("../../docs/envelope.md");

/// The body of the doc's one fenced block whose info string is `json <tag>`,
/// without the final line end.
fn block(tag: &str) -> &'static str {
    let fence = format!("```json {tag}\n");
    let mut found = DOC.match_indices(&fence);
    let (at, _) = found
        .next()
        .unwrap_or_else(|| panic!("docs/envelope.md has no ```json {tag} block"));
    assert!(found.next().is_none(), "two ```json {tag} blocks");
    let body = &DOC[at + fence.len()..];
    let end = body
        .find("\n```")
        .unwrap_or_else(|| panic!("unclosed {tag} block"));
    &body[..end]
}

fn hex(s: &str) -> Vec<u8> {
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    assert!(s.len().is_multiple_of(2) && s.bytes().all(lower_hex), "{s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Vector {
    org_id: String,
    provider: String,
    data_key: [u8; 32],
    nonce: [u8; 12],
    master: [u8; 32],
    wrap_nonce: [u8; 12],
    plaintext: &'static str,
    derived: Value,
    envelope: &'static str,
}

fn vector() -> Vector {
    let inputs: Value = serde_json::from_str(block("test-vector-inputs")).unwrap();
    let field = |k: &str| inputs[k].as_str().unwrap_or_else(|| panic!("no {k}"));
    let bytes = |k: &str| hex(field(k));
    Vector {
        org_id: field("org_id").to_owned(),
        provider: field("provider").to_owned(),
        data_key: bytes("data_key_hex").try_into().unwrap(),
        nonce: bytes("nonce_hex").try_into().unwrap(),
        master: bytes("local_master_key_hex").try_into().unwrap(),
        wrap_nonce: bytes("local_wrap_nonce_hex").try_into().unwrap(),
        plaintext: block("test-vector-plaintext"),
        derived: serde_json::from_str(block("test-vector-derived")).unwrap(),
        envelope: block("test-vector-envelope"),
    }
}

impl Vector {
    fn derived(&self, k: &str) -> &str {
        self.derived[k].as_str().unwrap_or_else(|| panic!("no {k}"))
    }

    fn context(&self) -> EncryptionContext {
        assert_eq!(self.provider, Provider::Twilio.as_str());
        EncryptionContext::new(
            OrgId::new(Uuid::parse_str(&self.org_id).unwrap()),
            Provider::Twilio,
        )
    }

    fn keyring(&self) -> LocalKeyring {
        LocalKeyring::new(Zeroizing::new(self.master.to_vec())).unwrap()
    }
}

// --- (a) the doc's description, implemented here without the crate ---

/// "As AES-GCM associated data": 0x01, u16 BE pair count, then per pair sorted by
/// key: u16 BE key length, key, u16 BE value length, value.
fn doc_aad(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut pairs = pairs.to_vec();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = vec![0x01];
    out.extend_from_slice(&u16::try_from(pairs.len()).unwrap().to_be_bytes());
    for (k, v) in pairs {
        for part in [k.as_bytes(), v.as_bytes()] {
            out.extend_from_slice(&u16::try_from(part.len()).unwrap().to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

fn gcm_seal(key: &[u8], nonce: &[u8], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::try_assume_unique_for_key(nonce).unwrap(),
        Aad::from(aad),
        &mut buf,
    )
    .unwrap();
    buf
}

fn gcm_open(key: &[u8], nonce: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let mut buf = sealed.to_vec();
    let n = key
        .open_in_place(
            Nonce::try_assume_unique_for_key(nonce).unwrap(),
            Aad::from(aad),
            &mut buf,
        )
        .ok()?
        .len();
    buf.truncate(n);
    Some(buf)
}

#[test]
fn an_implementation_from_the_doc_alone_reproduces_the_vector() {
    let v = vector();
    assert_eq!(v.plaintext.len(), 127, "the doc says 127 bytes");

    // The context, as the doc lays it out; the org id in its canonical form.
    assert_eq!(
        Uuid::parse_str(&v.org_id).unwrap().hyphenated().to_string(),
        v.org_id
    );
    let aad = doc_aad(&[("provider", &v.provider), ("org_id", &v.org_id)]);
    assert_eq!(aad.len(), 67);
    assert_eq!(to_hex(&aad), v.derived("associated_data_hex"));

    // The blob: ciphertext with the 16-byte tag appended.
    let ct = gcm_seal(&v.data_key, &v.nonce, &aad, v.plaintext.as_bytes());
    assert_eq!(ct.len(), v.plaintext.len() + 16);
    assert_eq!(to_hex(&ct), v.derived("ct_hex"));

    // The local keyring: kid from SHA-256 of the master key; edk = wrap nonce ||
    // GCM(master, data key, same AAD).
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &v.master);
    let kid = format!("local:{}", to_hex(&digest.as_ref()[..6]));
    assert_eq!(kid, v.derived("kid"));
    let mut edk = v.wrap_nonce.to_vec();
    edk.extend(gcm_seal(&v.master, &v.wrap_nonce, &aad, &v.data_key));
    assert_eq!(edk.len(), 60);
    assert_eq!(to_hex(&edk), v.derived("edk_hex"));

    // The envelope JSON, in the writer's order, padded standard base64.
    let blob = format!(
        r#"{{"v":1,"kid":"{kid}","edk":"{}","iv":"{}","ct":"{}"}}"#,
        STANDARD.encode(&edk),
        STANDARD.encode(v.nonce),
        STANDARD.encode(&ct),
    );
    assert_eq!(blob, v.envelope);

    // And the reader's side, from the doc's steps: parse, unwrap, open.
    let env: Value = serde_json::from_str(v.envelope).unwrap();
    let mut keys: Vec<&str> = env
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["ct", "edk", "iv", "kid", "v"]);
    assert_eq!(env["v"], 1);
    let b64 = |k: &str| STANDARD.decode(env[k].as_str().unwrap()).unwrap();
    let (edk, iv, ct) = (b64("edk"), b64("iv"), b64("ct"));
    assert_eq!(iv.len(), 12);
    let (wrap_nonce, wrapped) = edk.split_at(12);
    let data_key = gcm_open(&v.master, wrap_nonce, &aad, wrapped).unwrap();
    assert_eq!(data_key, v.data_key);
    let plain = gcm_open(&data_key, &iv, &aad, &ct).unwrap();
    assert_eq!(plain, v.plaintext.as_bytes());
    let other = doc_aad(&[
        ("org_id", "00000000-0000-4000-8000-000000000000"),
        ("provider", "twilio"),
    ]);
    assert!(gcm_open(&data_key, &iv, &other, &ct).is_none());

    // The plaintext is the credential JSON the doc describes: three string members.
    let cred: Value = serde_json::from_str(v.plaintext).unwrap();
    let cred = cred.as_object().unwrap();
    let mut keys: Vec<&str> = cred.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["accountSid", "authToken", "phoneNumber"]);
    assert!(cred.values().all(Value::is_string));
    assert_eq!(
        serde_json::to_string(cred).unwrap(),
        v.plaintext,
        "compact, in order"
    );
}

// --- (b) the crate opens the doc's blob ---

#[tokio::test]
async fn the_crate_opens_the_docs_blob() {
    let v = vector();
    let keyring = Keyring::Local(v.keyring());
    let env: Envelope = serde_json::from_str(v.envelope).unwrap();
    let plain = keyring.open(&v.context(), &env).await.unwrap();
    assert_eq!(plain.as_slice(), v.plaintext.as_bytes());

    // As Postgres' jsonb hands it back: keys re-ordered, spaces added.
    let reordered = format!(
        r#"{{"v": 1, "ct": "{}", "iv": "{}", "edk": "{}", "kid": "{}"}}"#,
        STANDARD.encode(&env.ciphertext),
        STANDARD.encode(&env.nonce),
        STANDARD.encode(&env.encrypted_data_key),
        env.key_id,
    );
    let back: Envelope = serde_json::from_str(&reordered).unwrap();
    assert_eq!(back, env);

    // Another org's context does not decrypt; another version is refused.
    let other = EncryptionContext::new(OrgId::new(Uuid::new_v4()), Provider::Twilio);
    assert!(matches!(
        keyring.open(&other, &env).await,
        Err(CryptoError::Undecryptable)
    ));
    let mut v2 = env.clone();
    v2.version = 2;
    assert!(matches!(
        keyring.open(&v.context(), &v2).await,
        Err(CryptoError::UnsupportedVersion(2))
    ));
    // A nonce that is not 12 bytes, a tag cut short.
    let mut short = env.clone();
    short.nonce.pop();
    assert!(matches!(
        keyring.open(&v.context(), &short).await,
        Err(CryptoError::Undecryptable)
    ));
    let mut cut = env.clone();
    cut.ciphertext.truncate(15);
    assert!(matches!(
        keyring.open(&v.context(), &cut).await,
        Err(CryptoError::Undecryptable)
    ));
}

#[test]
fn the_crate_refuses_what_the_doc_says_is_malformed() {
    let v = vector();
    let mut env: Value = serde_json::from_str(v.envelope).unwrap();
    let cases = [
        ("an unknown member", {
            let mut e = env.clone();
            e["aad"] = "x".into();
            e
        }),
        ("a missing member", {
            let mut e = env.clone();
            e.as_object_mut().unwrap().remove("kid");
            e
        }),
        ("unpadded base64", {
            let mut e = env.clone();
            e["ct"] = e["ct"].as_str().unwrap().trim_end_matches('=').into();
            e
        }),
        ("non-canonical base64 (non-zero trailing bits)", {
            let mut e = env.clone();
            e["iv"] = "AB==".into();
            e
        }),
        ("url-safe base64", {
            let mut e = env.clone();
            e["ct"] = e["ct"]
                .as_str()
                .unwrap()
                .replace('+', "-")
                .replace('/', "_")
                .into();
            e
        }),
        ("a non-integer version", {
            let mut e = env.clone();
            e["v"] = 1.5.into();
            e
        }),
    ];
    for (what, bad) in cases {
        assert!(
            serde_json::from_value::<Envelope>(bad).is_err(),
            "accepted {what}"
        );
    }
    env["v"] = 1.into();
    assert!(serde_json::from_value::<Envelope>(env).is_ok());
}

// --- (c) the crate seals to the doc's blob ---

#[test]
fn the_crate_seals_the_docs_blob() {
    let v = vector();
    let env = v
        .keyring()
        .data_key_for_test_vector(&v.context(), v.data_key, v.wrap_nonce)
        .unwrap()
        .seal_for_test_vector(v.nonce, v.plaintext.as_bytes())
        .unwrap();
    assert_eq!(serde_json::to_string(&env).unwrap(), v.envelope);
}
