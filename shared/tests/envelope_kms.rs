//! The KMS keyring through the real AWS SDK against the emulator.

use shared::envelope::{CryptoError, EncryptionContext, Keyring, KmsKeyring};
use shared::ids::{OrgId, Provider};
use uuid::Uuid;

fn ctx() -> EncryptionContext {
    EncryptionContext::new(OrgId::new(Uuid::new_v4()), Provider::Twilio)
}

async fn kms_keyring() -> Keyring {
    let aws = testkit::aws_config().await;
    let key = testkit::kms_key(&aws).await;
    Keyring::Kms(KmsKeyring::new(aws_sdk_kms::Client::new(&aws), key))
}

#[tokio::test]
async fn kms_round_trip_with_a_fresh_data_key_each_time() {
    let k = kms_keyring().await;
    let c = ctx();
    let a = k
        .generate_data_key(&c)
        .await
        .unwrap()
        .seal(b"{\"authToken\":\"x\"}")
        .unwrap();
    let b = k
        .generate_data_key(&c)
        .await
        .unwrap()
        .seal(b"{\"authToken\":\"x\"}")
        .unwrap();
    assert_ne!(a.encrypted_data_key, b.encrypted_data_key);
    assert!(
        a.key_id.starts_with("arn:aws:kms:"),
        "stores the key ARN: {}",
        a.key_id
    );
    assert_eq!(
        k.open(&c, &a).await.unwrap().as_slice(),
        b"{\"authToken\":\"x\"}"
    );
}

#[tokio::test]
async fn kms_refuses_another_orgs_context() {
    let k = kms_keyring().await;
    let env = k
        .generate_data_key(&ctx())
        .await
        .unwrap()
        .seal(b"blob")
        .unwrap();
    let err = k.open(&ctx(), &env).await.unwrap_err();
    assert!(matches!(err, CryptoError::Undecryptable), "{err:?}");
}

#[tokio::test]
async fn kms_refuses_tampered_parts() {
    let k = kms_keyring().await;
    let c = ctx();
    let env = k
        .generate_data_key(&c)
        .await
        .unwrap()
        .seal(b"blob")
        .unwrap();
    let mut bad = env.clone();
    bad.ciphertext[0] ^= 1;
    assert!(matches!(
        k.open(&c, &bad).await,
        Err(CryptoError::Undecryptable)
    ));
    let mut bad = env.clone();
    bad.nonce[3] ^= 1;
    assert!(matches!(
        k.open(&c, &bad).await,
        Err(CryptoError::Undecryptable)
    ));
    let mut bad = env.clone();
    let last = bad.encrypted_data_key.len() - 1;
    bad.encrypted_data_key[last] ^= 1;
    assert!(k.open(&c, &bad).await.is_err());
}

#[tokio::test]
async fn kms_errors_surface_as_kms_errors() {
    let aws = testkit::aws_config().await;
    let k = Keyring::Kms(KmsKeyring::new(
        aws_sdk_kms::Client::new(&aws),
        format!("arn:aws:kms:us-east-1:123456789012:key/{}", Uuid::new_v4()),
    ));
    let err = k.generate_data_key(&ctx()).await.unwrap_err();
    assert!(matches!(err, CryptoError::Kms(_)), "{err:?}");
}
