//! The test harness every test uses.
//!
//! `scripts/test.sh` starts the shared, throwaway services once per run and exports
//! where they are: a PostgreSQL cluster (`TEST_DATABASE_URL`, an admin URL) and the
//! AWS emulator, moto in server mode (`AWS_ENDPOINT_URL`). Each test then gets its own
//! database with the migrations applied ([`TestDb`]), its own wiremock fakes of Vapi
//! and Twilio ([`fakes`]), and can cut connections with a [`relay::TcpRelay`] and read
//! the log lines it caused ([`logs`]).

pub mod event;
pub mod fakes;
pub mod logs;
pub mod probe;
pub mod relay;
pub mod vapi_credentials;

use shared::db::{Db, DbConfig};

fn password_of(cfg: &DbConfig) -> &str {
    cfg.password()
        .map(secrecy::ExposeSecret::expose_secret)
        .expect("a password login")
}

/// `postgres://user:password@host:port/db?sslmode=disable` of a password login.
fn url_of(cfg: &DbConfig) -> String {
    format!(
        "postgres://{}:{}@{}:{}/{}?sslmode=disable",
        cfg.user,
        password_of(cfg),
        cfg.host,
        cfg.port,
        cfg.dbname
    )
}

/// Where the script's services are, or a clear instruction if they are not.
fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh, which starts PostgreSQL and the AWS emulator")
    })
}

/// A fresh database in the throwaway cluster, named per test, with the migrations
/// applied by the admin (the schema's owner, as `migrate` in a deployment) and the
/// functions' logins set up as `migrate` sets them up: `<name>_route` (group
/// `telephony_route`) and `<name>_read` (group `telephony_read`). The code under test
/// logs in as the route login, as it does deployed; assertions use the admin.
/// The cluster is deleted with everything in it when the run ends.
pub struct TestDb {
    pub name: String,
    /// The route functions' login: what the code under test connects with.
    pub config: DbConfig,
    /// The pool the code under test uses (the route login).
    pub db: Db,
    /// list-numbers' read-only login.
    pub reader: DbConfig,
    /// The schema owner (the cluster's admin).
    admin: DbConfig,
}

impl TestDb {
    pub async fn new() -> Self {
        use shared::migrate::{Grant, Login, LoginAuth};

        let admin_url = required_env("TEST_DATABASE_URL");
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let mut admin = DbConfig::from_url(&admin_url).expect("TEST_DATABASE_URL parses");
        admin.dbname = name.clone();
        let owner = Db::new(&admin).expect("pool");
        shared::migrate::run(&owner)
            .await
            .expect("migrations apply");
        let login = |grant: Grant, suffix: &str| {
            let mut cfg = admin.clone();
            cfg.user = format!("{name}_{suffix}");
            let password = uuid::Uuid::new_v4().simple().to_string();
            cfg.auth = shared::db::DbAuth::Password(secrecy::SecretString::from(password.clone()));
            let login = Login {
                user: cfg.user.clone(),
                grant,
                auth: LoginAuth::Password(secrecy::SecretString::from(password)),
            };
            (cfg, login)
        };
        let (config, route) = login(Grant::Route, "route");
        let (reader, read) = login(Grant::Read, "read");
        for l in [&route, &read] {
            shared::migrate::set_up_login(&owner, l)
                .await
                .expect("set up login");
        }
        let db = Db::new(&config).expect("pool");
        Self {
            name,
            config,
            db,
            reader,
            admin,
        }
    }

    /// A pool logged in as the schema's owner (applying migrations again, say).
    pub fn owner_db(&self) -> Db {
        Db::new(&self.admin).expect("pool")
    }

    /// `DATABASE_URL` for this database as the route login (loopback, plain TCP):
    /// what a route function is given.
    pub fn url(&self) -> String {
        url_of(&self.config)
    }

    /// `DATABASE_URL` as list-numbers' read-only login.
    pub fn reader_url(&self) -> String {
        url_of(&self.reader)
    }

    /// `DATABASE_URL` as the schema's owner: for what applies migrations and sets up
    /// logins itself (the local API).
    pub fn admin_url(&self) -> String {
        url_of(&self.admin)
    }

    /// Every row of every application table as text: for asserting a secret is
    /// stored nowhere in the clear.
    pub async fn dump(&self) -> String {
        let c = self.client().await;
        let mut out = String::new();
        for table in [
            "organizations",
            "org_credentials",
            "managed_phone_numbers",
            "phone_number_mapping",
            "audit_log",
        ] {
            for row in c
                .query(&format!("SELECT row_to_json(t)::text FROM {table} t"), &[])
                .await
                .expect("dump")
            {
                out.push_str(row.get::<_, &str>(0));
                out.push('\n');
            }
        }
        out
    }

    /// Another, independent pool on the same database: a second Lambda instance.
    pub fn second_instance(&self) -> Db {
        Db::new(&self.config).expect("pool")
    }

    /// A `DbConfig` reaching this database through `port` on loopback (a relay).
    pub fn config_via(&self, port: u16) -> DbConfig {
        let mut c = self.config.clone();
        c.host = "127.0.0.1".into();
        c.port = port;
        c
    }

    /// A direct connection as the admin, for set-up and assertions, outside the pool
    /// under test.
    pub async fn client(&self) -> tokio_postgres::Client {
        self.client_as(&self.admin).await
    }

    /// A direct connection as `cfg`'s login (a password login to this database).
    pub async fn client_as(&self, cfg: &DbConfig) -> tokio_postgres::Client {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&cfg.host)
            .port(cfg.port)
            .user(&cfg.user)
            .password(password_of(cfg))
            .dbname(&self.name);
        let (client, conn) = pg.connect(tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(conn);
        client
    }

    /// A login role of the test's own, allowed into this database, with `password`.
    pub async fn login_role(&self, password: &str) -> String {
        let name = format!("app_{}", uuid::Uuid::new_v4().simple());
        self.client()
            .await
            .batch_execute(&format!(
                "CREATE ROLE {name} LOGIN PASSWORD '{password}'; \
                 GRANT CONNECT ON DATABASE {} TO {name}",
                self.name
            ))
            .await
            .expect("create role");
        name
    }

    /// Give `role` a new password and end its sessions (as a proxy dropping them), so
    /// the next query logs in again.
    pub async fn change_password(&self, role: &str, password: &str) {
        let c = self.client().await;
        c.batch_execute(&format!("ALTER ROLE {role} PASSWORD '{password}'"))
            .await
            .expect("alter role");
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .expect("terminate");
    }

    /// A managed number of `org`, active and routed (a `phone_number_mapping` row),
    /// with Twilio SIDs derived from the number so each seeded number is distinct.
    pub async fn managed_number(
        &self,
        org: shared::ids::OrgId,
        number: &str,
        vapi_phone_id: Option<&str>,
    ) -> SeededNumber {
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        let seeded = SeededNumber {
            number: number.to_owned(),
            number_sid: format!("PN{digits:0>32}"),
            subaccount_sid: format!("AC{digits:f>32}"),
            vapi_phone_id: vapi_phone_id.map(str::to_owned),
        };
        let c = self.client().await;
        c.execute(
            "INSERT INTO managed_phone_numbers (org_id, phone_number, twilio_phone_sid, twilio_subaccount_sid, vapi_phone_id)
             VALUES ($1, $2, $3, $4, $5)",
            &[&org.as_uuid(), &seeded.number, &seeded.number_sid, &seeded.subaccount_sid, &seeded.vapi_phone_id],
        )
        .await
        .expect("insert managed number");
        c.execute(
            "INSERT INTO phone_number_mapping (org_id, inbound_phone_number, vapi_phone_id) VALUES ($1, $2, $3)",
            &[&org.as_uuid(), &seeded.number, &seeded.vapi_phone_id],
        )
        .await
        .expect("insert mapping");
        seeded
    }

    /// Insert an organisation row and return its id.
    pub async fn org(&self) -> shared::ids::OrgId {
        let id = uuid::Uuid::new_v4();
        self.client()
            .await
            .execute(
                "INSERT INTO organizations (id, name) VALUES ($1, 'Test org')",
                &[&id],
            )
            .await
            .expect("insert org");
        shared::ids::OrgId::new(id)
    }
}

/// A managed number [`TestDb::managed_number`] inserted.
#[derive(Debug, Clone)]
pub struct SeededNumber {
    pub number: String,
    pub number_sid: String,
    pub subaccount_sid: String,
    pub vapi_phone_id: Option<String>,
}

/// The AWS SDK configuration, loaded exactly as the functions load it, but only when
/// it points at the local emulator: a test never reaches real AWS.
pub async fn aws_config() -> aws_config::SdkConfig {
    let endpoint = required_env("AWS_ENDPOINT_URL");
    assert!(
        endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
        "AWS_ENDPOINT_URL must be the local emulator, not {endpoint}"
    );
    shared::config::aws_sdk_config(&shared::config::Env::from_process())
        .expect("the AWS SDK configuration")
}

/// A fresh symmetric KMS key in the emulator.
pub async fn kms_key(aws: &aws_config::SdkConfig) -> String {
    let kms = aws_sdk_kms::Client::new(aws);
    let out = kms
        .create_key()
        .send()
        .await
        .expect("emulator creates a KMS key");
    out.key_metadata
        .expect("key metadata")
        .arn
        .expect("key arn")
}

/// One statement through `db`, answering 7: for tests of how a pool logs in and
/// reconnects.
pub async fn ask(db: &Db) -> Result<i32, shared::db::DbError> {
    let row = db
        .query_one(
            "SELECT $1::int4",
            &[(&7i32, tokio_postgres::types::Type::INT4)],
        )
        .await?;
    Ok(row.get(0))
}

/// Store `value` as a new secret in the emulator's Secrets Manager; returns its ARN.
pub async fn put_secret(aws: &aws_config::SdkConfig, value: &serde_json::Value) -> String {
    let sm = aws_sdk_secretsmanager::Client::new(aws);
    let out = sm
        .create_secret()
        .name(format!("test/{}", uuid::Uuid::new_v4()))
        .secret_string(value.to_string())
        .send()
        .await
        .expect("emulator stores a secret");
    out.arn.expect("secret arn")
}
