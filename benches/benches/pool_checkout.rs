//! Criterion: one uncontended checkout and return of a pooled connection (no query), and the
//! same with a trivial query, on a local cluster.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use diesel::{RunQueryDsl, dsl::sql, sql_types::Integer};
use pgops_pool::{DatabaseUrl, Environment, Pool, PoolSettings};
use pgops_testkit::{Cluster, ClusterOptions};

fn checkout(c: &mut Criterion) {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    let settings = PoolSettings {
        max_size: 1,
        min_idle: 1,
        leak_threshold: None,
        ..Environment::Production.profile()
    };
    let pool = Pool::open(
        "criterion",
        DatabaseUrl::parse(&cluster.url("postgres")).unwrap(),
        settings,
    )
    .unwrap();
    let with_leak_check = Pool::open(
        "criterion-leaks",
        DatabaseUrl::parse(&cluster.url("postgres")).unwrap(),
        PoolSettings {
            max_size: 1,
            min_idle: 1,
            ..Environment::Production.profile()
        },
    )
    .unwrap();

    c.bench_function("checkout_and_return", |b| {
        b.iter(|| drop(pool.get().unwrap()))
    });
    c.bench_function("checkout_and_return_with_leak_tracking", |b| {
        b.iter(|| drop(with_leak_check.get().unwrap()))
    });
    c.bench_function("checkout_select_1_return", |b| {
        b.iter(|| {
            let mut conn = pool.get().unwrap();
            diesel::select(sql::<Integer>("1"))
                .get_result::<i32>(&mut *conn)
                .unwrap()
        })
    });
}

criterion_group!(benches, checkout);
criterion_main!(benches);
