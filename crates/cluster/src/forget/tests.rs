use super::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn snap(host: &str, tags: &[&str], time: &str) -> Snapshot {
    Snapshot {
        time: t(time),
        hostname: host.into(),
        username: "u".into(),
        paths: vec!["/v".into()],
        tags: tags.iter().map(|s| s.to_string()).collect(),
        tree: Id::default(),
        parent: None,
        incomplete: false,
        program_version: String::new(),
        summary: Default::default(),
        original: None,
    }
}

const OLD_TAG: &str = "tidemark-20261126T090000Z-aaaaaa";

/// Which of `cases` (snapshot, expected) `find_leftovers` finds, the second
/// one referenced by a backup.
fn check(cluster: ClusterSnapshots<'_>, cases: &[(Snapshot, bool)]) {
    let now = t("2026-11-26T12:00:00Z");
    let newest = Some(t("2026-11-26T10:00:00Z"));
    let snaps: Vec<(Id, Snapshot)> = cases.iter().map(|(s, _)| (Id::random(), s.clone())).collect();
    let refs = BTreeMap::from([(snaps[1].0, BTreeSet::from([Id::random()]))]);
    let found = find_leftovers(&cluster, &snaps, &refs, newest, Duration::from_secs(3600), now);
    let want: Vec<Id> = snaps.iter().zip(cases).filter(|(_, c)| c.1).map(|(s, _)| s.0).collect();
    assert_eq!(found.iter().map(|l| l.snapshot).collect::<Vec<_>>(), want);
    assert!(find_leftovers(&cluster, &snaps, &refs, None, Duration::ZERO, now).is_empty(), "no backup, no bound");
}

#[test]
fn only_old_unreferenced_snapshots_of_this_cluster_are_leftovers() {
    let new_tag = "tidemark-20261126T103000Z-bbbbbb";
    let young_tag = "tidemark-20261126T080000Z-cccccc";
    let host = "cassandra/prod/127.0.1.1";
    let cases = [
        (snap(host, &[OLD_TAG, "cassandra"], "2026-11-26T09:01:00Z"), true),
        // Referenced by a backup.
        (snap(host, &[OLD_TAG, "cassandra"], "2026-11-26T09:01:00Z"), false),
        // Started after the newest backup: may still be committing.
        (snap(host, &[new_tag, "cassandra"], "2026-11-26T10:31:00Z"), false),
        // Too young (grace), although its tag is old.
        (snap(host, &[young_tag, "cassandra"], "2026-11-26T11:30:00Z"), false),
        // Old itself, but another node of its backup uploaded lately.
        (snap(host, &[young_tag, "cassandra"], "2026-11-26T08:10:00Z"), false),
        // Another cluster, a plain snapshot, no tidemark tag.
        (snap("cassandra/other/127.0.1.1", &[OLD_TAG, "cassandra"], "2026-11-26T09:01:00Z"), false),
        (snap("laptop", &[OLD_TAG], "2026-11-26T09:01:00Z"), false),
        (snap(host, &["cassandra", "manual"], "2026-11-26T09:01:00Z"), false),
        // Another store's snapshot of a cluster of the same name.
        (snap("hdfs/prod/namespace", &[OLD_TAG, "hdfs"], "2026-11-26T09:01:00Z"), false),
    ];
    check(ClusterSnapshots { cluster: "prod", stores: &["cassandra"] }, &cases);
}

#[test]
fn every_store_named_counts_by_its_host_name_and_tag() {
    let cases = [
        (snap("hdfs/prod/namespace", &[OLD_TAG, "hdfs"], "2026-11-26T09:01:00Z"), true),
        (snap("hdfs/prod/namespace", &[OLD_TAG, "hdfs"], "2026-11-26T09:01:00Z"), false),
        (snap("cassandra/prod/127.0.1.1", &[OLD_TAG, "cassandra"], "2026-11-26T09:01:00Z"), true),
        // The host name of one store with the tag of another.
        (snap("hdfs/prod/namespace", &[OLD_TAG, "cassandra"], "2026-11-26T09:01:00Z"), false),
        (snap("mongodb/prod/rs0", &[OLD_TAG, "mongodb"], "2026-11-26T09:01:00Z"), false),
    ];
    check(ClusterSnapshots { cluster: "prod", stores: &["cassandra", "hdfs"] }, &cases);
}

#[test]
fn choice_refuses_ids_with_rules_and_an_empty_policy() {
    let file = Path::new("c.toml");
    let retention = crate::config::RetentionConfig { keep_daily: 7, ..Default::default() };
    let common = |retention| Common {
        name: "prod",
        repository: "/r",
        password_file: Path::new("/pw"),
        token_file: Path::new("/token"),
        retention,
    };
    let last = KeepPolicy { last: 2, ..Default::default() };
    let e = choose(vec!["abcd".into()], Some(last.clone()), false, file, common(None)).unwrap_err();
    assert_eq!(e.to_string(), "give either backup ids or --keep-* rules, not both");
    assert!(
        matches!(choose(vec!["abcd".into()], None, false, file, common(None)), Ok(Choice::Named(n)) if n == ["abcd"])
    );
    // Flags win over the file's table, which wins over nothing.
    assert!(
        matches!(choose(vec![], Some(last), false, file, common(Some(&retention))), Ok(Choice::Keep(p)) if p.last == 2)
    );
    assert!(matches!(choose(vec![], None, false, file, common(Some(&retention))), Ok(Choice::Keep(p)) if p.daily == 7));
    let e = choose(vec![], None, false, file, common(None)).unwrap_err().to_string();
    assert!(e.contains("c.toml has no [retention] table") && e.contains("cluster prod; pass --allow-empty"), "{e}");
    assert!(matches!(choose(vec![], None, true, file, common(None)), Ok(Choice::Keep(p)) if p.is_empty()));
}
