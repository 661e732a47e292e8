//! Valid recipients (`P recipients`) and AUTH users (`P users`, `P user:<address>`).

use super::*;

#[async_trait]
impl DirectoryBackend for RedisBackend {
    async fn recipient_add(&self, address: &str) -> Result<bool, StoreError> {
        self.writable()?;
        let i = &self.inner;
        let mut conn = i.conn();
        let n: i64 = i
            .call(
                "SADD recipients",
                redis::cmd("SADD")
                    .arg(i.key("recipients"))
                    .arg(address)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(n == 1)
    }

    async fn recipient_remove(&self, address: &str) -> Result<bool, StoreError> {
        self.writable()?;
        let i = &self.inner;
        let mut conn = i.conn();
        let n: i64 = i
            .call(
                "SREM recipients",
                redis::cmd("SREM")
                    .arg(i.key("recipients"))
                    .arg(address)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(n == 1)
    }

    async fn recipient_list(&self) -> Result<Vec<String>, StoreError> {
        let i = &self.inner;
        let mut conn = i.conn();
        let mut list: Vec<String> = i
            .call(
                "SMEMBERS recipients",
                redis::cmd("SMEMBERS")
                    .arg(i.key("recipients"))
                    .query_async(&mut conn),
            )
            .await?;
        list.sort();
        Ok(list)
    }

    async fn recipient_lookup(&self, address: &str) -> Result<Option<bool>, StoreError> {
        let i = &self.inner;
        let mut conn = i.conn();
        let domain = address
            .rsplit_once('@')
            .map(|(_, d)| format!("@{d}"))
            .unwrap_or_default();
        let k = i.key("recipients");
        let mut pipe = redis::pipe();
        pipe.cmd("SCARD")
            .arg(&k)
            .cmd("SMISMEMBER")
            .arg(&k)
            .arg(address)
            .arg(domain);
        let (n, hits): (u64, Vec<i64>) = i
            .call("recipient lookup", pipe.query_async(&mut conn))
            .await?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(hits.contains(&1)))
    }

    async fn user_get(&self, address: &str) -> Result<Option<User>, StoreError> {
        let i = &self.inner;
        let mut conn = i.conn();
        let got: (Option<String>, Option<String>, Option<String>) = i
            .call(
                "user HMGET",
                redis::cmd("HMGET")
                    .arg(i.key(&format!("user:{address}")))
                    .arg(&["hash", "enabled", "senders"])
                    .query_async(&mut conn),
            )
            .await?;
        user(address, got)
    }

    async fn user_add(&self, u: User) -> Result<bool, StoreError> {
        self.writable()?;
        let i = &self.inner;
        let mut conn = i.conn();
        let senders = serde_json::to_string(&u.senders).map_err(unavailable)?;
        let mut inv = i.scripts.user_add.prepare_invoke();
        inv.arg(i.prefix())
            .arg(&u.address)
            .arg(&u.password_hash)
            .arg(if u.enabled { "1" } else { "0" })
            .arg(senders);
        let n: i64 = i.call("user add", inv.invoke_async(&mut conn)).await?;
        Ok(n == 1)
    }

    async fn user_set_password(&self, address: &str, hash: &str) -> Result<bool, StoreError> {
        self.user_set(address, "hash", hash).await
    }

    async fn user_set_enabled(&self, address: &str, enabled: bool) -> Result<bool, StoreError> {
        self.user_set(address, "enabled", if enabled { "1" } else { "0" })
            .await
    }

    async fn user_list(&self) -> Result<Vec<User>, StoreError> {
        let i = &self.inner;
        let mut conn = i.conn();
        let addresses: Vec<String> = i
            .call(
                "ZRANGE users",
                redis::cmd("ZRANGE")
                    .arg(i.key("users"))
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn),
            )
            .await?;
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for a in &addresses {
            pipe.cmd("HMGET")
                .arg(i.key(&format!("user:{a}")))
                .arg(&["hash", "enabled", "senders"]);
        }
        type Row = (Option<String>, Option<String>, Option<String>);
        let rows: Vec<Row> = i.call("users HMGET", pipe.query_async(&mut conn)).await?;
        let mut out = Vec::new();
        for (a, row) in addresses.iter().zip(rows) {
            out.extend(user(a, row)?);
        }
        Ok(out)
    }
}

impl RedisBackend {
    async fn user_set(&self, address: &str, field: &str, value: &str) -> Result<bool, StoreError> {
        self.writable()?;
        let i = &self.inner;
        let mut conn = i.conn();
        let mut inv = i.scripts.user_set.prepare_invoke();
        inv.arg(i.prefix()).arg(address).arg(field).arg(value);
        let n: i64 = i.call("user change", inv.invoke_async(&mut conn)).await?;
        Ok(n == 1)
    }
}

fn user(
    address: &str,
    (hash, enabled, senders): (Option<String>, Option<String>, Option<String>),
) -> Result<Option<User>, StoreError> {
    let Some(hash) = hash else {
        return Ok(None);
    };
    let senders: Vec<String> = match senders {
        Some(s) => serde_json::from_str(&s)
            .map_err(|e| StoreError::Corrupt(format!("user {address}: {e}")))?,
        None => Vec::new(),
    };
    Ok(Some(User {
        address: address.to_string(),
        password_hash: hash,
        enabled: enabled.as_deref() != Some("0"),
        senders,
    }))
}
