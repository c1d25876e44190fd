use sqlx::{Connection, PgConnection};

/// Where test databases are created; the machine's Postgres by default.
pub fn server_url() -> String {
    std::env::var("BIDA_TEST_POSTGRES").unwrap_or_else(|_| "postgres://127.0.0.1:5432".to_string())
}

/// A uniquely named database on the test server, dropped when this is dropped
/// (kept when `BIDA_TEST_KEEP_DB` is set, for debugging).
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// A fresh name; the database itself is left for Bida to create.
    pub fn reserve() -> Self {
        let name = format!("bida_test_{}", uuid::Uuid::new_v4().simple());
        let url = format!("{}/{name}", server_url());
        Self { name, url }
    }

    /// A fresh, empty database.
    pub async fn create() -> Self {
        let db = Self::reserve();
        let mut admin = admin().await;
        sqlx::query(&format!("CREATE DATABASE {}", db.name))
            .execute(&mut admin)
            .await
            .expect("create test database");
        db
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

async fn admin() -> PgConnection {
    PgConnection::connect(&format!("{}/postgres", server_url()))
        .await
        .expect("connect to the test Postgres server (set BIDA_TEST_POSTGRES if it is not at 127.0.0.1:5432)")
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::env::var_os("BIDA_TEST_KEEP_DB").is_some() {
            eprintln!("kept test database {}", self.url);
            return;
        }
        let name = self.name.clone();
        // Drop may run inside a Tokio runtime, which cannot block on another.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let mut admin = admin().await;
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            });
        });
        let _ = dropper.join();
    }
}
