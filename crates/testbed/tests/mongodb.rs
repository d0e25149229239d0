//! The MongoDB wire protocol (FerretDB) through the official Rust driver:
//! insert and find, the insert seen by tailing `local.oplog.rs`, and
//! instances that stand in for shards being independent.

use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::options::CursorType;
use mongodb::Client;
use testbed::fixture::SharedCell;
use testbed::mongodb::Info;
use testbed::Kind;

static MONGO: SharedCell = SharedCell::new(Kind::Mongodb, "TESTBED_MONGODB_ROOT", Some(2));

/// Names unique to this run, so tests also pass against a reused cluster.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

async fn client(instance: usize) -> Client {
    let info: Info = MONGO.get().info();
    Client::with_uri_str(&info.uris[instance]).await.unwrap()
}

#[tokio::test]
async fn insert_and_find() {
    let coll = client(0)
        .await
        .database(&unique("tb_find"))
        .collection::<Document>("things");
    let docs: Vec<Document> = (0..20)
        .map(|i| doc! { "_id": i, "name": format!("thing-{i}"), "even": i % 2 == 0 })
        .collect();
    coll.insert_many(docs.clone()).await.unwrap();

    let found: Vec<Document> = coll
        .find(doc! { "even": true })
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let expected: Vec<Document> = docs
        .into_iter()
        .filter(|d| d.get_bool("even").unwrap())
        .collect();
    assert_eq!(found, expected);

    let duplicate = coll.insert_one(doc! { "_id": 0 }).await.unwrap_err();
    assert!(duplicate.to_string().contains("E11000"), "{duplicate}");
}

#[tokio::test]
async fn insert_appears_in_tailed_oplog() {
    let client = client(0).await;
    let name = unique("events");
    let coll = client.database("tb_oplog").collection::<Document>(&name);
    coll.insert_one(doc! { "_id": "first", "n": 1 })
        .await
        .unwrap();

    let oplog = client.database("local").collection::<Document>("oplog.rs");
    // FerretDB closes a tailable cursor whose first batch is smaller than the
    // batch size (mongod keeps it open), so ask for batches of one.
    let mut tail = oplog
        .find(doc! { "ns": format!("tb_oplog.{name}") })
        .cursor_type(CursorType::TailableAwait)
        .batch_size(1)
        .max_await_time(Duration::from_millis(500))
        .await
        .unwrap();
    let first = next(&mut tail).await;
    assert_eq!(first.get_str("op").unwrap(), "i");
    assert_eq!(
        first.get_document("o").unwrap(),
        &doc! { "_id": "first", "n": 1 }
    );

    // Written after the cursor was opened: only tailing can deliver it.
    coll.insert_one(doc! { "_id": "second", "n": 2 })
        .await
        .unwrap();
    let second = next(&mut tail).await;
    assert_eq!(second.get_str("op").unwrap(), "i");
    assert_eq!(
        second.get_document("o").unwrap(),
        &doc! { "_id": "second", "n": 2 }
    );
    assert!(second.get_timestamp("ts").unwrap() > first.get_timestamp("ts").unwrap());
}

async fn next(cursor: &mut mongodb::Cursor<Document>) -> Document {
    tokio::time::timeout(Duration::from_secs(30), cursor.try_next())
        .await
        .expect("no oplog entry within 30 s")
        .unwrap()
        .expect("tailable cursor closed")
}

#[tokio::test]
async fn instances_are_independent() {
    let (one, two) = (client(0).await, client(1).await);
    let key = doc! { "_id": unique("only-on-one") };
    one.database("tb_shard")
        .collection::<Document>("c")
        .insert_one(key.clone())
        .await
        .unwrap();
    let elsewhere = two
        .database("tb_shard")
        .collection::<Document>("c")
        .find_one(key.clone())
        .await
        .unwrap();
    assert_eq!(elsewhere, None);
    let here = one
        .database("tb_shard")
        .collection::<Document>("c")
        .find_one(key.clone())
        .await
        .unwrap();
    assert_eq!(here, Some(key));

    // Each instance has its own emulated oplog and says it is a one-member set.
    for c in [&one, &two] {
        let hello = c
            .database("admin")
            .run_command(doc! { "hello": 1 })
            .await
            .unwrap();
        assert_eq!(hello.get_str("setName").unwrap(), "rs0");
        assert!(hello.get_bool("isWritablePrimary").unwrap());
    }
}
