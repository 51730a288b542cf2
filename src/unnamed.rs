//! Statements sent unnamed: parsed, bound and run in one round trip, so no
//! prepared statement outlives its transaction and a transaction-mode pooler
//! (PgBouncer) may hand each transaction to a different server connection.
//!
//! tokio-postgres's `query`/`execute` first prepare a named statement
//! (`s1`, `s2`, ...) and close it later; behind a transaction pooler the
//! prepare, the execute and the close can land on three different backends,
//! where another client's `s1` may already exist. Its `query_typed` sends
//! the unnamed statement instead, which needs each parameter's type up
//! front: [`Param`] gives it from the Rust type. Every query pgmaint runs on
//! a user's database or its state store goes through [`Unnamed`]; clippy's
//! `disallowed-methods` (clippy.toml) refuses the named forms.

use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::{Error, GenericClient, Row};

/// A query parameter that knows its PostgreSQL type.
pub(crate) trait Param: ToSql + Sync {
    fn pg_type(&self) -> Type;
}

/// The PostgreSQL type a Rust type is sent as.
pub(crate) trait PgType {
    const TYPE: Type;
}

impl<T: ToSql + Sync + PgType> Param for T {
    fn pg_type(&self) -> Type {
        T::TYPE
    }
}

macro_rules! pg_types {
    ($($rust:ty => $pg:ident),* $(,)?) => {
        $(impl PgType for $rust {
            const TYPE: Type = Type::$pg;
        })*
    };
}

pg_types!(
    bool => BOOL,
    i16 => INT2,
    i32 => INT4,
    i64 => INT8,
    f32 => FLOAT4,
    f64 => FLOAT8,
    u32 => OID,
    String => TEXT,
    str => TEXT,
    Vec<String> => TEXT_ARRAY,
    [String] => TEXT_ARRAY,
    Vec<&str> => TEXT_ARRAY,
    [&str] => TEXT_ARRAY,
    Vec<i32> => INT4_ARRAY,
    Vec<i64> => INT8_ARRAY,
    [i64] => INT8_ARRAY,
    Vec<u32> => OID_ARRAY,
    [u32] => OID_ARRAY,
    Vec<bool> => BOOL_ARRAY,
    Vec<f64> => FLOAT8_ARRAY,
    Vec<u8> => BYTEA,
    [u8] => BYTEA,
    serde_json::Value => JSONB,
    chrono::DateTime<chrono::Utc> => TIMESTAMPTZ,
    chrono::DateTime<chrono::FixedOffset> => TIMESTAMPTZ,
    chrono::NaiveDateTime => TIMESTAMP,
    chrono::NaiveDate => DATE,
);

impl<T: PgType + ?Sized> PgType for &T {
    const TYPE: Type = T::TYPE;
}

impl<T: PgType> PgType for Option<T> {
    const TYPE: Type = T::TYPE;
}

impl<T: serde::Serialize + std::fmt::Debug> PgType for Json<T> {
    const TYPE: Type = Type::JSONB;
}

/// The four ways pgmaint runs a statement with parameters, all unnamed.
pub(crate) trait Unnamed {
    /// Every row (`query`).
    async fn rows(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, Error>;
    /// Exactly one row (`query_one`).
    async fn row(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, Error>;
    /// At most one row (`query_opt`).
    async fn row_opt(&self, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>, Error>;
    /// The number of rows changed (`execute`).
    async fn exec(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, Error>;
}

/// The parameters with their types, as `query_typed` takes them.
fn typed<'a>(params: &'a [&'a dyn Param]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|p| (*p as &(dyn ToSql + Sync), p.pg_type()))
        .collect()
}

impl<C: GenericClient> Unnamed for C {
    async fn rows(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, Error> {
        self.query_typed(sql, &typed(params)).await
    }

    async fn row(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, Error> {
        self.query_typed_one(sql, &typed(params)).await
    }

    async fn row_opt(&self, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>, Error> {
        self.query_typed_opt(sql, &typed(params)).await
    }

    async fn exec(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, Error> {
        self.execute_typed(sql, &typed(params)).await
    }
}
