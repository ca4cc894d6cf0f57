//! One envelope encrypt (fresh data key + AES-256-GCM seal of a credential-sized
//! blob) through the local keyring and through KMS on the emulator.

use benchmarks::measure;
use shared::envelope::{EncryptionContext, Keyring, KmsKeyring, LocalKeyring};
use shared::ids::{OrgId, Provider};
use zeroize::Zeroizing;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let blob = br#"{"accountSid":"AC0123456789abcdef0123456789abcdef","authToken":"0123456789abcdef0123456789abcdef","phoneNumber":"+14155550100"}"#;
    let ctx = EncryptionContext::new(OrgId::new(uuid::Uuid::new_v4()), Provider::Twilio);

    let local = Keyring::Local(LocalKeyring::new(Zeroizing::new(vec![9u8; 32])).expect("key"));
    measure("envelope seal, local keyring", 50, n, |_| async {
        local.generate_data_key(&ctx).await?.seal(blob)
    })
    .await
    .print();

    let aws = testkit::aws_config().await;
    let key = testkit::kms_key(&aws).await;
    let kms = Keyring::Kms(KmsKeyring::new(aws_sdk_kms::Client::new(&aws), key));
    measure(
        "envelope seal, KMS on the emulator (moto)",
        20,
        n,
        |_| async { kms.generate_data_key(&ctx).await?.seal(blob) },
    )
    .await
    .print();
    let sealed = kms
        .generate_data_key(&ctx)
        .await
        .and_then(|key| key.seal(blob))
        .expect("seal");
    measure("envelope open, KMS on the emulator (moto)", 20, n, |_| {
        kms.open(&ctx, &sealed)
    })
    .await
    .print();
}
