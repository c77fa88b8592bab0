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
fn a_full_palette_keeps_new_cells_whole_and_frees_what_no_cell_uses() {
    let mut col = Column::default();
    let cell = |n: u32| Cell {
        total: 1 + n % 200,
        waiting_at_read: n / 200,
        ..Default::default()
    };
    // 254 distinct non-empty cells fill the palette (number 0 is the empty cell's).
    for i in 1..=254 {
        col.set(Some(i), cell(i));
    }
    assert_eq!(col.palette.len(), 255);
    assert!(col.wide.is_empty());
    col.set(Some(300), cell(300));
    assert_eq!(
        col.wide.len(),
        1,
        "a new cell with the palette full is kept whole"
    );
    assert_eq!(col.get(Some(300)), cell(300));
    // Sample 1 now holds sample 2's cell: number 1 is free and taken by the next new cell.
    col.set(Some(1), cell(2));
    col.set(Some(301), cell(301));
    assert_eq!(col.wide.len(), 1);
    assert_eq!(col.cells[301], 1);
    for i in 2..=254 {
        assert_eq!(col.get(Some(i)), cell(i));
    }
    assert_eq!(
        (col.get(Some(1)), col.get(Some(300)), col.get(Some(301))),
        (cell(2), cell(300), cell(301))
    );
    // Equal to a column holding the same cells numbered otherwise.
    let mut other = Column::default();
    for i in (1..=301).rev() {
        other.set(Some(i), col.get(Some(i)));
    }
    assert_eq!(other, col);
    other.set(Some(7), Cell::default());
    assert_ne!(other, col);
}

proptest::proptest! {
    /// Whatever cells are set, in whatever order, each sample reads back its last one.
    #[test]
    fn a_column_reads_back_what_was_set(
        sets in proptest::collection::vec((0u32..400, 0u32..4, 0u32..300, 0u32..3), 0..2000)
    ) {
        let mut col = Column::default();
        let mut want = HashMap::new();
        for (i, total, known0, waiting) in sets {
            let cell = Cell {
                total: total * 90,
                waiting_at_read: waiting,
                known: [known0, waiting, 0, i % 3, 0, 0],
            };
            col.set(Some(i), cell);
            want.insert(i, cell);
        }
        for i in 0..400 {
            proptest::prop_assert_eq!(col.get(Some(i)), want.get(&i).copied().unwrap_or_default());
        }
        let in_use = col.uses.iter().filter(|u| **u > 0).count();
        let free = col.palette.iter().filter(|p| **p == FREE).count();
        proptest::prop_assert_eq!(in_use + free + 1, col.palette.len());
    }
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
