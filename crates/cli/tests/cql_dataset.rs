//! The CQL data set and its comparator (tests/common/cql.rs) against a real
//! 3-node Cassandra cluster: a filled keyspace checks clean, the same seed
//! writes the same data, and the comparator fails, naming table, key and
//! column, when one value is changed or one row deleted.

mod common;

use anyhow::{ensure, Context, Result};
use common::cql;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::value::CqlValue;
use testbed::cassandra::Info;
use testbed::fixture::SharedCell;
use testbed::Kind;

static CLUSTER: SharedCell = SharedCell::new(Kind::Cassandra, "TESTBED_CASSANDRA_ROOT", Some(3));

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn connect() -> Result<Session> {
    let info: Info = CLUSTER.get().info();
    SessionBuilder::new()
        .known_nodes(&info.contact_points)
        .build()
        .await
        .context("connecting the driver")
}

fn error_text(r: Result<()>) -> String {
    match r {
        Ok(()) => panic!("the check passed on damaged data"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn filled_dataset_checks_clean_and_same_seed_gives_same_data() -> Result<()> {
    runtime().block_on(async {
        let session = connect().await?;
        let mut ds = cql::create_and_fill(&session, "cqlds_clean", 3, 200).await?;
        for (name, t) in &ds.tables {
            ensure!(t.rows.len() > 50, "{name} has only {} rows", t.rows.len());
        }
        // The cases the model must get right are really in it.
        let events = ds.table("events")?;
        ensure!(
            events.rows.values().any(|r| r.values[2].is_none()),
            "no static-only row in events"
        );
        let expiring = ds.table("expiring")?;
        ensure!(expiring.rows.values().any(|r| r.ttl) && expiring.rows.values().any(|r| !r.ttl));
        cql::check_all(&session, &ds).await?;
        let original = ds.clone();

        // Incremental: 5% more rows, still equal to the model.
        let before = ds.row_count();
        cql::write_more(&session, &mut ds, 10).await?;
        ensure!(ds.row_count() > before, "write_more added nothing");
        cql::check_all(&session, &ds).await?;

        // Another keyspace from the same seed holds exactly the same rows
        // as the first before write_more: checked against that model.
        cql::create_and_fill(&session, "cqlds_twin", cql::Replication::Simple(2), 200).await?;
        for name in cql::table_names() {
            cql::check_table(&session, "cqlds_twin", name, &original).await?;
        }
        // Another seed writes other data.
        cql::create_and_fill_seeded(&session, "cqlds_other", 3, 200, 99).await?;
        let other =
            error_text(cql::check_table(&session, "cqlds_other", "scalars", &original).await);
        assert!(other.contains("table cqlds_other.scalars"), "{other}");
        Ok(())
    })
}

#[test]
fn a_changed_value_is_named_with_table_key_and_column() -> Result<()> {
    runtime().block_on(async {
        let session = connect().await?;
        let ds = cql::create_and_fill(&session, "cqlds_changed", 3, 60).await?;
        cql::check_all(&session, &ds).await?;

        let key = cql::overwrite_cell(
            &session,
            &ds,
            "scalars",
            5,
            "c_text",
            CqlValue::Text("tampered".into()),
        )
        .await?;
        let err = error_text(cql::check_table(&session, &ds.keyspace, "scalars", &ds).await);
        println!("{err}");
        assert!(
            err.contains("table cqlds_changed.scalars: 1 rows differ, 0 missing, 0 extra"),
            "{err}"
        );
        assert!(
            err.contains(&format!("({key}) column c_text: expected ")),
            "{err}"
        );
        assert!(err.contains("found \"tampered\""), "{err}");

        // A float one bit away (as a careless restore might round it), in
        // a table with a composite key: named too.
        let events = ds.table("events")?;
        let (ekey, row) = events
            .rows
            .iter()
            .find(|(_, r)| {
                r.values[2].is_some() && matches!(r.values[6], Some(CqlValue::Double(_)))
            })
            .context("an events row with a score")?;
        let Some(CqlValue::Double(score)) = row.values[6] else {
            unreachable!()
        };
        let nth = events
            .rows
            .keys()
            .filter(|k| !k.contains("happened=null"))
            .position(|k| k == ekey)
            .context("row index")?;
        let changed = f64::from_bits(score.to_bits() ^ 1);
        let key = cql::overwrite_cell(
            &session,
            &ds,
            "events",
            nth,
            "score",
            CqlValue::Double(changed),
        )
        .await?;
        assert_eq!(&key, ekey);
        let err = error_text(cql::check_all(&session, &ds).await);
        println!("{err}");
        assert!(err.contains(&format!("({key}) column score")), "{err}");
        assert!(
            err.contains("tenant=") && err.contains("happened=timestamp("),
            "{err}"
        );
        assert!(
            err.contains("table cqlds_changed.scalars")
                && err.contains("table cqlds_changed.events"),
            "{err}"
        );
        Ok(())
    })
}

#[test]
fn a_deleted_row_is_named_missing() -> Result<()> {
    runtime().block_on(async {
        let session = connect().await?;
        let ds = cql::create_and_fill(&session, "cqlds_deleted", 3, 60).await?;
        cql::check_all(&session, &ds).await?;
        let gone = cql::delete_rows(&session, &ds, "people", 1).await?;
        assert_eq!(gone.len(), 1);
        let err = error_text(cql::check_table(&session, &ds.keyspace, "people", &ds).await);
        println!("{err}");
        assert!(
            err.contains("table cqlds_deleted.people: 0 rows differ, 1 missing, 0 extra"),
            "{err}"
        );
        assert!(err.contains(&format!("missing row ({})", gone[0])), "{err}");

        // A truncated table: every row missing; a dropped one: a read error naming it.
        cql::truncate(&session, &ds.keyspace, "counters").await?;
        let err = error_text(cql::check_table(&session, &ds.keyspace, "counters", &ds).await);
        let want = ds.table("counters")?.rows.len();
        assert!(err.contains(&format!("{want} missing")), "{err}");
        cql::drop_table(&session, &ds.keyspace, "expiring").await?;
        let err = error_text(cql::check_table(&session, &ds.keyspace, "expiring", &ds).await);
        assert!(err.contains("cqlds_deleted.expiring"), "{err}");
        Ok(())
    })
}
