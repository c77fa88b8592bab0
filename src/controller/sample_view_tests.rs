use super::*;
use crate::pipeline::matrix::build;
use TaskState::*;

#[test]
fn cells_pack_into_bytes_and_large_ones_stay_whole() {
    let mut col = Column::default();
    let small = Cell {
        total: 3,
        waiting_at_read: 1,
        known: [1, 0, 0, 1, 0, 0],
    };
    col.set(Some(2), small);
    assert_eq!(col.get(Some(2)), small);
    assert_eq!(col.get(Some(1)), Cell::default());
    assert_eq!(col.get(Some(9)), Cell::default());
    let big = Cell {
        total: 300,
        known: [255, 0, 0, 0, 0, 0],
        ..Default::default()
    };
    col.set(Some(1), big);
    assert_eq!(col.get(Some(1)), big);
    assert_eq!(col.wide.len(), 1);
    // Back under a byte: packed again.
    col.update(Some(1), |c| *c = small);
    assert_eq!(col.get(Some(1)), small);
    assert!(col.wide.is_empty());
    col.set(None, big);
    assert_eq!(col.none(), big);
    assert_eq!(col.cells().map(|(i, _)| i).collect::<Vec<_>>(), vec![1, 2]);
    col.clear_slot(slot(Running));
    assert_eq!(col.get(Some(2)).known[slot(Running)], 0);
}

#[test]
fn the_view_is_the_matrix_it_was_made_of_and_pages_like_it() {
    let g = Graph::default();
    let mut ids: Vec<(String, TaskState)> = (0..300)
        .map(|i| {
            let s = [Succeeded, Pending, Running, Failed][i % 4];
            (format!("NA{:05}", 299 - i), s)
        })
        .collect();
    ids.push(("NA00007".into(), Held));
    let m = build(
        &g,
        vec![("align".into(), ids.clone()), ("call".into(), ids)],
    );
    let v = SampleView::of_matrix(&g, &m);
    assert_eq!(v.matrix(), m);
    let page = v.view("na001", 5);
    let want = m.view("na001", 5);
    assert_eq!(
        serde_json::to_value(&page).unwrap(),
        serde_json::to_value(&want).unwrap()
    );
    assert_eq!(
        (page.total, page.matched, page.samples.len()),
        (300, 100, 5)
    );
    assert_eq!(
        serde_json::to_value(page.as_view()).unwrap(),
        serde_json::to_value(&want).unwrap()
    );
}
