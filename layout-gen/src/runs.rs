//! Work split into runs of consecutive items, one run per core, with the results kept in order:
//! how the model builder uses the machine's cores without its output depending on how many
//! there are.

/// The number of threads to split work over: the available cores, at most 8.
pub(crate) fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8)
}

/// `work` applied to consecutive runs of `items`, one run per worker thread; the results come
/// back in the order of the runs.
pub(crate) fn map_runs<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    work: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    let run = items.len().div_ceil(workers.max(1)).max(1);
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(run)
            .map(|part| scope.spawn(move || work(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order_whatever_the_thread_count() {
        let items: Vec<u32> = (0..10).collect();
        for workers in [0, 1, 3, 16] {
            let sums: Vec<u32> = map_runs(&items, workers, |run| run.iter().sum());
            assert_eq!(sums.iter().sum::<u32>(), 45);
            let firsts: Vec<u32> = map_runs(&items, workers, |run| run[0]);
            assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{firsts:?}");
        }
        assert!(map_runs(&[] as &[u32], 2, |run| run.len()).is_empty());
    }
}
