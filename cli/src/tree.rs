//! From a [`TaskDump`] and already-symbolized frames to groups of tasks with
//! identical call trees. Nothing here touches the system, so it is tested
//! with hand-made dumps and symbol tables.

use std::collections::HashMap;

use delouse_proto::{Location, TaskDump, TaskState};

/// One logical frame: a function at a source location. An instruction
/// address expands to several of these when calls were inlined into it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Frame {
    /// Demangled function name, or a placeholder naming the address.
    pub function: String,
    /// Source file as recorded in the debug info (not shortened).
    pub file: Option<String>,
    /// 1-based line.
    pub line: Option<u32>,
    /// 1-based column.
    pub column: Option<u32>,
    /// Whether this call was inlined into its caller.
    pub inlined: bool,
}

impl Frame {
    /// A frame with no source information.
    pub fn unknown(function: String) -> Self {
        Frame {
            function,
            file: None,
            line: None,
            column: None,
            inlined: false,
        }
    }

    /// Whether it is a placeholder that names an address: no symbol was
    /// found for it (placeholders are `0x…`; a function name never is).
    pub fn is_unresolved(&self) -> bool {
        self.file.is_none() && self.function.starts_with("0x")
    }

    /// Whether the frame is the delouse agent's own (its poll shim and
    /// wrappers), which the person did not write and need not see.
    pub fn is_agent(&self) -> bool {
        let f = self.function.as_str();
        f.starts_with("delouse::") || f.starts_with("<delouse::")
    }

    fn same_call(&self, other: &Frame) -> bool {
        self.function == other.function && self.file == other.file && self.line == other.line
    }
}

/// What each entry of [`TaskDump::frames`] symbolizes to, in the same order:
/// its logical frames, outermost (the physical function) first.
pub type SymbolTable = Vec<Vec<Frame>>;

/// A node of a task's call tree: a frame and the calls below it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    /// The frame.
    pub frame: Frame,
    /// Callees, in a canonical order.
    pub children: Vec<Node>,
}

/// The state of every task in a [`Group`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// The tasks traced themselves.
    Traced,
    /// The tasks were not polled before the deadline.
    NotPolledInTime,
    /// The tasks finished during the dump.
    Finished,
}

impl State {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Traced => "traced",
            State::NotPolledInTime => "not_polled_in_time",
            State::Finished => "finished",
        }
    }
}

/// Tasks with the same state, call tree and spawn location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Tasks in the group.
    pub count: usize,
    /// Their state.
    pub state: State,
    /// Their known tokio task ids, ascending.
    pub task_ids: Vec<u64>,
    /// Where they were spawned.
    pub spawned_at: Option<Location>,
    /// Age of the oldest, in milliseconds.
    pub oldest_age_ms: Option<u64>,
    /// For tasks not polled in time: the longest time since a last poll.
    pub max_last_poll_ago_ms: Option<u64>,
    /// Their common call tree (roots are the outermost frames).
    pub tree: Vec<Node>,
}

/// Logical frames kept per backtrace. Real traces are far shallower; the
/// cap keeps a garbage answer from recursing without bound.
const MAX_DEPTH: usize = 512;

fn out_of_range(index: u32) -> Vec<Frame> {
    vec![Frame::unknown(format!(
        "<frame {index}: not in the dump's frame table>"
    ))]
}

/// Inserts one root-to-leaf path of frames into a forest.
fn insert(forest: &mut Vec<Node>, path: &[Frame]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let i = match forest.iter().position(|n| n.frame.same_call(first)) {
        Some(i) => i,
        None => {
            forest.push(Node {
                frame: first.clone(),
                children: Vec::new(),
            });
            forest.len() - 1
        }
    };
    insert(&mut forest[i].children, rest);
}

fn sort_forest(forest: &mut [Node]) {
    forest.sort_by(|a, b| {
        (
            &a.frame.file,
            a.frame.line,
            a.frame.column,
            &a.frame.function,
        )
            .cmp(&(
                &b.frame.file,
                b.frame.line,
                b.frame.column,
                &b.frame.function,
            ))
    });
    for n in forest {
        sort_forest(&mut n.children);
    }
}

/// A task's call tree: its backtraces (each innermost first) merged from the
/// root, with every address expanded to its logical frames and the agent's
/// own frames dropped.
pub fn task_tree(backtraces: &[Vec<u32>], symbols: &[Vec<Frame>]) -> Vec<Node> {
    let mut forest = Vec::new();
    let mut path = Vec::new();
    for backtrace in backtraces {
        path.clear();
        for &index in backtrace.iter().rev() {
            let frames = match symbols.get(index as usize) {
                Some(frames) => frames.clone(),
                None => out_of_range(index),
            };
            path.extend(frames.into_iter().filter(|f| !f.is_agent()));
        }
        if path.len() > MAX_DEPTH {
            // Deeper than any real trace: keep the outermost frames (the
            // application's) and say how many were cut.
            let cut = path.len() - (MAX_DEPTH - 1);
            path.truncate(MAX_DEPTH - 1);
            path.push(Frame::unknown(format!("… {cut} more frames not shown")));
        }
        insert(&mut forest, &path);
    }
    sort_forest(&mut forest);
    forest
}

/// Groups the tasks of `dump` by state, call tree and spawn location; the
/// largest groups first.
pub fn group_tasks(dump: &TaskDump, symbols: &[Vec<Frame>]) -> Vec<Group> {
    // Tasks parked at the same place share their backtraces' frame indexes:
    // build each distinct tree once, and group by small ids.
    let mut tree_of_backtraces: HashMap<&[Vec<u32>], usize> = HashMap::new();
    let mut tree_ids: HashMap<Vec<Node>, usize> = HashMap::new();
    let mut trees: Vec<Vec<Node>> = Vec::new();
    // Spawn locations by value, in case the same one was sent twice.
    let mut location_ids: HashMap<&Location, usize> = HashMap::new();
    let location_id: Vec<usize> = dump
        .locations
        .iter()
        .map(|l| {
            let next = location_ids.len();
            *location_ids.entry(l).or_insert(next)
        })
        .collect();

    let mut index: HashMap<(State, Option<usize>, Option<usize>), usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for task in &dump.tasks {
        let (state, tree) = match &task.state {
            TaskState::Traced(backtraces) => {
                let id = *tree_of_backtraces
                    .entry(backtraces.as_slice())
                    .or_insert_with(|| {
                        let tree = task_tree(backtraces, symbols);
                        let next = trees.len();
                        *tree_ids.entry(tree.clone()).or_insert_with(|| {
                            trees.push(tree);
                            next
                        })
                    });
                (State::Traced, Some(id))
            }
            TaskState::NotPolledInTime => (State::NotPolledInTime, None),
            TaskState::Finished => (State::Finished, None),
        };
        let location = task
            .spawned_at
            .and_then(|i| location_id.get(i as usize).copied());
        let g = *index.entry((state, tree, location)).or_insert_with(|| {
            groups.push(Group {
                count: 0,
                state,
                task_ids: Vec::new(),
                spawned_at: task
                    .spawned_at
                    .and_then(|i| dump.locations.get(i as usize))
                    .cloned(),
                oldest_age_ms: None,
                max_last_poll_ago_ms: None,
                tree: tree.map(|t| trees[t].clone()).unwrap_or_default(),
            });
            groups.len() - 1
        });
        let group = &mut groups[g];
        group.count += 1;
        group.task_ids.extend(task.id);
        if let Some(age) = task.age_ms {
            group.oldest_age_ms = Some(group.oldest_age_ms.map_or(age, |a| a.max(age)));
        }
        if state == State::NotPolledInTime
            && let Some(ago) = task.last_poll_ago_ms
        {
            group.max_last_poll_ago_ms =
                Some(group.max_last_poll_ago_ms.map_or(ago, |a| a.max(ago)));
        }
    }
    for g in &mut groups {
        g.task_ids.sort_unstable();
    }
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| location_order(&a.spawned_at, &b.spawned_at))
            .then_with(|| a.state.cmp(&b.state))
            .then_with(|| a.task_ids.first().cmp(&b.task_ids.first()))
    });
    groups
}

fn location_order(a: &Option<Location>, b: &Option<Location>) -> std::cmp::Ordering {
    let key = |l: &Location| (l.file.clone(), l.line, l.column);
    match (a, b) {
        (Some(a), Some(b)) => key(a).cmp(&key(b)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use delouse_proto::{Coverage, Task, TasksMode};

    pub(crate) fn frame(function: &str, file: &str, line: u32, inlined: bool) -> Frame {
        Frame {
            function: function.into(),
            file: Some(file.into()),
            line: Some(line),
            column: Some(5),
            inlined,
        }
    }

    const TOKIO: &str = "/h/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src";

    /// Addresses 0..=4 of a fake program:
    /// 0: the agent's shim, which inlines app::serve's future poll
    /// 1: app::serve awaiting a Notify (inlines tokio's Notified::poll)
    /// 2: app::serve awaiting a sleep
    /// 3: tokio's trace leaf
    /// 4: app::other
    pub(crate) fn symbols() -> SymbolTable {
        vec![
            vec![
                frame(
                    "<delouse::traced::Traced<F> as core::future::future::Future>::poll",
                    "/d/traced.rs",
                    30,
                    false,
                ),
                frame("app::serve::{{closure}}", "/app/src/main.rs", 10, true),
            ],
            vec![
                frame("app::serve::{{closure}}", "/app/src/main.rs", 12, false),
                frame(
                    "tokio::sync::notify::Notified::poll",
                    &format!("{TOKIO}/sync/notify.rs"),
                    900,
                    true,
                ),
            ],
            vec![frame(
                "app::serve::{{closure}}",
                "/app/src/main.rs",
                14,
                false,
            )],
            vec![frame(
                "tokio::runtime::task::trace::trace_leaf",
                &format!("{TOKIO}/runtime/task/trace/mod.rs"),
                200,
                false,
            )],
            vec![frame(
                "app::other::{{closure}}",
                "/app/src/other.rs",
                3,
                false,
            )],
        ]
    }

    pub(crate) fn location(line: u32) -> Location {
        Location {
            file: "/app/src/main.rs".into(),
            line,
            column: 9,
        }
    }

    pub(crate) fn task(id: u64, at: Option<u32>, age: u64, state: TaskState) -> Task {
        Task {
            id: Some(id),
            spawned_at: at,
            age_ms: Some(age),
            polls: Some(3),
            last_poll_ago_ms: Some(age / 2),
            state,
        }
    }

    pub(crate) fn dump(tasks: Vec<Task>) -> TaskDump {
        TaskDump {
            mode: TasksMode::Traced,
            frames: vec![0x1000, 0x2000, 0x3000, 0x4000, 0x5000],
            locations: vec![location(40), location(50)],
            coverage: Coverage {
                traced: tasks
                    .iter()
                    .filter(|t| matches!(t.state, TaskState::Traced(_)))
                    .count() as u64,
                not_polled_in_time: tasks
                    .iter()
                    .filter(|t| t.state == TaskState::NotPolledInTime)
                    .count() as u64,
                finished: tasks
                    .iter()
                    .filter(|t| t.state == TaskState::Finished)
                    .count() as u64,
                alive: Some(tasks.len() as u64 + 2),
                untraced: Some(2),
                notes: vec![],
            },
            tasks,
            modules: vec![],
            elapsed_us: 1234,
        }
    }

    fn names(forest: &[Node]) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(n: &Node, depth: usize, out: &mut Vec<String>) {
            out.push(format!(
                "{}{}:{}",
                " ".repeat(depth),
                n.frame
                    .function
                    .rsplit("::")
                    .nth(1)
                    .unwrap_or(&n.frame.function),
                n.frame.line.unwrap()
            ));
            for c in &n.children {
                walk(c, depth + 1, out);
            }
        }
        for n in forest {
            walk(n, 0, &mut out);
        }
        out
    }

    #[test]
    fn backtraces_merge_from_the_root_and_drop_agent_frames() {
        // Two leaves: Notify (3,1,0) and sleep (3,2,0), innermost first.
        let tree = task_tree(&[vec![3, 1, 0], vec![3, 2, 0]], &symbols());
        assert_eq!(
            names(&tree),
            [
                "serve:10",
                " serve:12",
                "  Notified:900",
                "   trace:200",
                " serve:14",
                "  trace:200"
            ]
        );
        assert!(tree[0].frame.inlined);
        assert!(tree[0].children[0].children[0].frame.inlined);
    }

    #[test]
    fn merge_order_does_not_depend_on_backtrace_order() {
        let a = task_tree(&[vec![3, 1, 0], vec![3, 2, 0]], &symbols());
        let b = task_tree(&[vec![3, 2, 0], vec![3, 1, 0]], &symbols());
        assert_eq!(a, b);
    }

    #[test]
    fn absurdly_deep_backtraces_are_cut() {
        let deep: Vec<u32> = (0..100_000).map(|i| i % 5).collect();
        let tree = task_tree(&[deep], &symbols());
        let mut depth = 0;
        let mut node = &tree[0];
        while let Some(child) = node.children.first() {
            depth += 1;
            node = child;
        }
        assert_eq!(depth + 1, MAX_DEPTH);
        assert!(
            node.frame.function.ends_with("more frames not shown"),
            "{:?}",
            node.frame
        );
    }

    #[test]
    fn bad_frame_indexes_do_not_panic() {
        let tree = task_tree(&[vec![99, 0]], &symbols());
        assert_eq!(
            tree[0].children[0].frame.function,
            "<frame 99: not in the dump's frame table>"
        );
    }

    #[test]
    fn identical_tasks_group_and_big_groups_come_first() {
        let notify = || TaskState::Traced(vec![vec![3, 1, 0]]);
        let sleep = || TaskState::Traced(vec![vec![3, 2, 0]]);
        let d = dump(vec![
            task(7, Some(1), 100, sleep()),
            task(3, Some(0), 500, notify()),
            task(1, Some(0), 900, notify()),
            task(2, Some(0), 200, notify()),
            task(9, Some(1), 50, TaskState::NotPolledInTime),
            task(10, Some(1), 70, TaskState::NotPolledInTime),
            task(11, None, 70, TaskState::Finished),
            task(12, Some(7), 70, TaskState::Traced(vec![])),
        ]);
        let groups = group_tasks(&d, &symbols());
        let summary: Vec<_> = groups
            .iter()
            .map(|g| {
                (
                    g.count,
                    g.state,
                    g.task_ids.clone(),
                    g.spawned_at.as_ref().map(|l| l.line),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (3, State::Traced, vec![1, 2, 3], Some(40)),
                (2, State::NotPolledInTime, vec![9, 10], Some(50)),
                (1, State::Traced, vec![7], Some(50)),
                (1, State::Traced, vec![12], None),
                (1, State::Finished, vec![11], None),
            ]
        );
        assert_eq!(groups[0].oldest_age_ms, Some(900));
        assert_eq!(groups[0].max_last_poll_ago_ms, None);
        assert_eq!(groups[1].max_last_poll_ago_ms, Some(35));
        assert!(groups[1].tree.is_empty());
        assert!(
            groups[3].tree.is_empty(),
            "a task waiting on nothing tokio traces has an empty tree"
        );
    }

    #[test]
    fn same_tree_at_different_spawn_sites_are_different_groups() {
        let notify = || TaskState::Traced(vec![vec![3, 1, 0]]);
        let d = dump(vec![
            task(1, Some(0), 1, notify()),
            task(2, Some(1), 1, notify()),
        ]);
        assert_eq!(group_tasks(&d, &symbols()).len(), 2);
    }
}
