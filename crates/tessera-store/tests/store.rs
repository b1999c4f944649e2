//! The store against a real data directory: files, batches, lines, and what
//! a reopen (a restart) sees.

use serde_json::json;
use tessera_store::{BatchStatus, NewBatch, NewFile, Store};

fn file(store: &Store, id: &str, owner: &str, text: &str) {
    let mut w = store.blob_writer(id).expect("writer");
    w.write(text.as_bytes()).expect("write");
    let bytes = w.commit().expect("commit");
    store
        .insert_file(&NewFile {
            id: id.into(),
            owner: owner.into(),
            purpose: "batch".into(),
            filename: "in.jsonl".into(),
            bytes,
        })
        .expect("insert");
}

#[test]
fn files_are_owned_listed_and_deleted_with_their_contents() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path()).expect("open");
    file(&store, "file-a", "alice", "{}\n");
    file(&store, "file-b", "alice", "{}\n{}\n");
    file(&store, "file-c", "bob", "{}\n");
    let ids: Vec<_> = store
        .files("alice", None, None, 10)
        .expect("list")
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(ids, ["file-b", "file-a"]);
    let after: Vec<_> = store
        .files("alice", None, Some("file-b"), 10)
        .expect("list")
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(after, ["file-a"]);
    assert!(store.file("bob", "file-a").expect("get").is_none());
    assert_eq!(
        store.file("alice", "file-b").expect("get").map(|f| f.bytes),
        Some(6)
    );
    assert!(!store.delete_file("bob", "file-a").expect("delete"));
    assert!(store.delete_file("alice", "file-a").expect("delete"));
    assert!(!store.blob_path("file-a").exists());
    assert!(store.blob_path("file-b").exists());
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_while_the_first_lives() {
    let dir = tempfile::tempdir().expect("dir");
    let first = Store::open(dir.path()).expect("open");
    assert!(matches!(
        Store::open(dir.path()),
        Err(tessera_store::StoreError::Locked(_))
    ));
    drop(first);
    Store::open(dir.path()).expect("reopen after close");
}

#[test]
fn an_uncommitted_writer_leaves_nothing_and_orphans_go_on_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let store = Store::open(dir.path()).expect("open");
        let mut w = store.blob_writer("file-x").expect("writer");
        w.write(b"partial").expect("write");
        drop(w);
        // Contents committed but never recorded: a crash between the two.
        let mut w = store.blob_writer("file-y").expect("writer");
        w.write(b"{}\n").expect("write");
        w.commit().expect("commit");
    }
    let store = Store::open(dir.path()).expect("reopen");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("files"))
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(store.files("", None, None, 10).expect("list").is_empty());
}

#[test]
fn lines_finish_once_and_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let store = Store::open(dir.path()).expect("open");
        let b = store
            .create_batch(&NewBatch {
                id: "batch_1".into(),
                owner: "alice".into(),
                endpoint: "/v1/completions".into(),
                input_file_id: "file-a".into(),
                completion_window: "24h".into(),
                metadata: Some(json!({"k": "v"})),
                expires_at: 100,
            })
            .expect("create");
        assert_eq!(b.status, BatchStatus::Validating);
        let lines: Vec<_> = (1..=3)
            .map(|i| (i, format!("r{i}"), "{}".to_string()))
            .collect();
        assert!(store.start_batch("batch_1", &lines).expect("start"));
        assert!(!store.start_batch("batch_1", &lines).expect("again"));
        assert!(store
            .finish_line("batch_1", 2, "out2", false)
            .expect("finish"));
        assert!(!store.finish_line("batch_1", 2, "dup", true).expect("twice"));
        assert!(store
            .finish_line("batch_1", 3, "err3", true)
            .expect("finish"));
    }
    let store = Store::open(dir.path()).expect("reopen");
    let b = store.batch("alice", "batch_1").expect("get").expect("some");
    assert_eq!(b.status, BatchStatus::InProgress);
    assert!(b.in_progress_at.is_some());
    assert_eq!(
        (b.counts.total, b.counts.completed, b.counts.failed),
        (3, 1, 1)
    );
    assert_eq!(b.metadata, Some(json!({"k": "v"})));
    assert!(store.batch("bob", "batch_1").expect("get").is_none());
    let pending: Vec<_> = store
        .batch_lines("batch_1", true)
        .expect("lines")
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(pending, [1]);
    let all = store.batch_lines("batch_1", false).expect("lines");
    assert_eq!(all[1].result.as_deref(), Some("out2"));
    assert_eq!(store.unfinished_batches().expect("unfinished").len(), 1);
    let out = NewFile {
        id: "file-out".into(),
        owner: "alice".into(),
        purpose: "batch_output".into(),
        filename: "batch_1_output.jsonl".into(),
        bytes: 0,
    };
    let (o, e) = store
        .end_batch(
            "batch_1",
            &[BatchStatus::InProgress],
            BatchStatus::Completed,
            Some(&out),
            None,
        )
        .expect("end");
    assert_eq!(o.map(|f| f.id).as_deref(), Some("file-out"));
    assert!(e.is_none());
    let b = store.batch("alice", "batch_1").expect("get").expect("some");
    assert_eq!(b.status, BatchStatus::Completed);
    assert_eq!(b.output_file_id.as_deref(), Some("file-out"));
    assert!(store.unfinished_batches().expect("unfinished").is_empty());
}
