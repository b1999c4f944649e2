use proptest::prelude::*;

use super::*;

const BS: usize = 4;

fn scheduler(num_blocks: usize, budget: usize, max_seqs: usize) -> Scheduler {
    Scheduler::new(
        SchedulerConfig {
            max_num_batched_tokens: budget,
            max_num_seqs: max_seqs,
            max_batch_seqs: max_seqs,
            max_batch_prefill_tokens: budget,
            hold_batch_for_interactive_prefill: false,
            whole_prompts: false,
            sliding_window: None,
        },
        BlockPool::new(num_blocks, BS, true),
    )
}

fn seq(id: SeqId, priority: Priority, prompt: Vec<u32>) -> Sequence {
    Sequence::new(id, priority, id, prompt, Vec::new(), BS)
}

/// Runs the scheduled work: computes chunks, and appends a token to every
/// sequence whose chunk reached its end.
pub(super) fn run_step(s: &mut Scheduler, plan: &[Scheduled]) {
    for p in plan {
        s.mark_computed(p.seq, p.num_tokens);
        let seq = s.get_mut(p.seq).expect("scheduled sequence exists");
        if seq.num_uncomputed() == 0 {
            let next = seq.tokens.len() as u32;
            seq.tokens.push(next);
        }
    }
}

#[test]
fn chunked_prefill_respects_the_budget_and_decodes_ride_along() {
    let mut s = scheduler(64, 8, 8);
    s.add(seq(1, Priority::Interactive, vec![7; 3]));
    let plan = s.schedule();
    assert_eq!(
        plan,
        [Scheduled {
            seq: 1,
            num_tokens: 3
        }]
    );
    run_step(&mut s, &plan);
    s.add(seq(2, Priority::Interactive, vec![8; 20]));
    // The running decode goes first, then 7 of the new prompt's 20 tokens.
    let plan = s.schedule();
    assert_eq!(
        plan,
        [
            Scheduled {
                seq: 1,
                num_tokens: 1
            },
            Scheduled {
                seq: 2,
                num_tokens: 7
            }
        ]
    );
    run_step(&mut s, &plan);
    let plan = s.schedule();
    assert_eq!(
        plan[1],
        Scheduled {
            seq: 2,
            num_tokens: 7
        }
    );
}

#[test]
fn interactive_requests_are_admitted_before_batch_ones() {
    let mut s = scheduler(64, 100, 1);
    s.add(seq(1, Priority::Batch, vec![1; 4]));
    s.add(seq(2, Priority::Interactive, vec![2; 4]));
    assert_eq!(s.schedule()[0].seq, 2);
}

#[test]
fn batch_sequences_run_only_up_to_their_cap() {
    let mut s = Scheduler::new(
        SchedulerConfig {
            max_num_batched_tokens: 100,
            max_num_seqs: 4,
            max_batch_seqs: 2,
            max_batch_prefill_tokens: 100,
            hold_batch_for_interactive_prefill: false,
            whole_prompts: false,
            sliding_window: None,
        },
        BlockPool::new(64, BS, true),
    );
    for id in 1..=4 {
        s.add(seq(id, Priority::Batch, vec![id as u32; 4]));
    }
    let ids: Vec<_> = s.schedule().iter().map(|p| p.seq).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!((s.num_running(), s.num_waiting()), (2, 2));
    // The free slots are for interactive work.
    s.add(seq(5, Priority::Interactive, vec![5; 4]));
    let ids: Vec<_> = s.schedule().iter().map(|p| p.seq).collect();
    assert_eq!(ids, [1, 2, 5]);
}

#[test]
fn an_interactive_sequence_takes_the_slot_of_the_latest_batch_one() {
    let mut s = scheduler(64, 100, 2);
    s.add(seq(1, Priority::Batch, vec![1; 4]));
    s.add(seq(2, Priority::Batch, vec![2; 4]));
    let plan = s.schedule();
    run_step(&mut s, &plan);
    s.add(seq(3, Priority::Interactive, vec![3; 4]));
    let ids: Vec<_> = s.schedule().iter().map(|p| p.seq).collect();
    assert_eq!(ids, [1, 3]);
    assert_eq!(s.num_preemptions(), 1);
    assert_eq!(s.get(2).expect("seq 2").num_computed, 0);
}

#[test]
fn a_waiting_interactive_prompt_takes_blocks_from_running_batch_work() {
    // 4 blocks of 4 tokens: two batch prompts of 6 tokens hold all of them.
    let mut s = scheduler(4, 100, 8);
    s.add(seq(1, Priority::Batch, vec![1; 6]));
    s.add(seq(2, Priority::Batch, vec![2; 6]));
    let plan = s.schedule();
    run_step(&mut s, &plan);
    assert_eq!(s.pool().num_free(), 0);
    s.add(seq(3, Priority::Interactive, vec![3; 6]));
    let ids: Vec<_> = s.schedule().iter().map(|p| p.seq).collect();
    assert_eq!(ids, [1, 3], "the latest batch sequence made room");
    assert_eq!(s.num_preemptions(), 1);
}

#[test]
fn batch_prompt_chunks_leave_a_waiting_interactive_prompt_its_budget() {
    let mut s = scheduler(64, 16, 8);
    s.add(seq(1, Priority::Batch, vec![1; 40]));
    assert_eq!(s.schedule()[0].num_tokens, 16);
    s.mark_computed(1, 16);
    s.add(seq(2, Priority::Interactive, vec![2; 10]));
    let plan = s.schedule();
    // The batch chunk shrinks to 6 so the 10-token prompt fits whole.
    assert_eq!(
        plan,
        [
            Scheduled {
                seq: 1,
                num_tokens: 6
            },
            Scheduled {
                seq: 2,
                num_tokens: 10
            }
        ]
    );
}

/// A scheduler with the batch rules on: batch prompt chunks capped at
/// `batch_prefill` tokens a step, batch work held out of a step that
/// computes an interactive prompt.
fn hybrid(budget: usize, batch_prefill: usize) -> Scheduler {
    Scheduler::new(
        SchedulerConfig {
            max_num_batched_tokens: budget,
            max_num_seqs: 16,
            max_batch_seqs: 8,
            max_batch_prefill_tokens: batch_prefill,
            hold_batch_for_interactive_prefill: true,
            whole_prompts: false,
            sliding_window: None,
        },
        BlockPool::new(256, BS, true),
    )
}

/// Tokens of `plan` per sequence, in plan order.
fn shares(plan: &[Scheduled]) -> Vec<(SeqId, usize)> {
    plan.iter().map(|p| (p.seq, p.num_tokens)).collect()
}

#[test]
fn batch_prompt_chunks_share_a_capped_part_of_each_step() {
    let mut s = hybrid(100, 8);
    for id in 1..=3 {
        s.add(seq(id, Priority::Batch, vec![id as u32; 6]));
    }
    // 8 batch prompt tokens a step: the first prompt whole, 2 of the next.
    let plan = s.schedule();
    assert_eq!(shares(&plan), [(1, 6), (2, 2)]);
    run_step(&mut s, &plan);
    // Decodes are not prompt tokens: seq 1 decodes beside 8 more prompt
    // tokens (the rest of seq 2, 4 of seq 3).
    let plan = s.schedule();
    assert_eq!(shares(&plan), [(1, 1), (2, 4), (3, 4)]);
    run_step(&mut s, &plan);
    // An interactive prompt is not capped (and, here, holds batch work out).
    s.add(seq(4, Priority::Interactive, vec![4; 40]));
    assert_eq!(shares(&s.schedule()), [(4, 40)]);
}

#[test]
fn a_step_that_computes_an_interactive_prompt_carries_no_batch_work() {
    let mut s = hybrid(100, 100);
    s.add(seq(1, Priority::Batch, vec![1; 4]));
    s.add(seq(2, Priority::Batch, vec![2; 4]));
    let plan = s.schedule();
    run_step(&mut s, &plan);
    s.add(seq(3, Priority::Interactive, vec![3; 10]));
    // The interactive prompt runs alone: the batch decodes wait a step.
    let plan = s.schedule();
    assert_eq!(shares(&plan), [(3, 10)]);
    run_step(&mut s, &plan);
    // Then everyone decodes together, interactive first.
    assert_eq!(shares(&s.schedule()), [(3, 1), (1, 1), (2, 1)]);
}

/// A step that had to push a sequence out admits no new work (a single
/// plan stops admitting there), also when it first planned without batch
/// work for an interactive prompt that then could not start.
#[test]
fn a_preemption_bars_new_work_also_after_a_failed_hold() {
    let mut s = Scheduler::new(
        SchedulerConfig {
            max_num_batched_tokens: 64,
            max_num_seqs: 8,
            max_batch_seqs: 8,
            max_batch_prefill_tokens: 64,
            hold_batch_for_interactive_prefill: true,
            whole_prompts: false,
            sliding_window: None,
        },
        BlockPool::new(5, BS, true),
    );
    s.add(seq(1, Priority::Interactive, vec![1; 4]));
    s.add(seq(2, Priority::Batch, vec![2; 9]));
    // Interactive 1 takes 2 blocks as it decodes, batch 2 the other 3;
    // after five steps 1 decodes at position 8 and needs a block more.
    for _ in 0..5 {
        let plan = s.schedule();
        run_step(&mut s, &plan);
    }
    assert_eq!(s.pool().num_free(), 0);
    s.add(seq(3, Priority::Interactive, vec![3; 4]));
    // 1's block comes from preempting 2, in the plan that holds batch work
    // out; the new prompt is not admitted after that, so the plan falls
    // back, and the fallback must not admit it either.
    assert_eq!(shares(&s.schedule()), [(1, 1)]);
    assert_eq!(s.num_preemptions(), 1);
}

#[test]
fn batch_work_rides_along_when_the_rule_is_off() {
    let mut s = hybrid(100, 100);
    s.config.hold_batch_for_interactive_prefill = false;
    s.add(seq(1, Priority::Batch, vec![1; 4]));
    let plan = s.schedule();
    run_step(&mut s, &plan);
    s.add(seq(2, Priority::Interactive, vec![2; 10]));
    assert_eq!(shares(&s.schedule()), [(1, 1), (2, 10)]);
}

#[test]
fn batch_work_sits_out_every_other_step_at_most() {
    // A new interactive prompt every step: batch decodes sit out one step,
    // ride the next, and so on; they never starve.
    let mut s = hybrid(100, 100);
    s.add(seq(1, Priority::Batch, vec![1; 4]));
    let plan = s.schedule();
    run_step(&mut s, &plan);
    let mut batch_steps = Vec::new();
    for id in 2..8 {
        s.add(seq(id, Priority::Interactive, vec![id as u32; 10]));
        let plan = s.schedule();
        batch_steps.push(plan.iter().any(|p| p.seq == 1));
        assert!(
            plan.contains(&Scheduled {
                seq: id,
                num_tokens: 10
            }),
            "{plan:?}"
        );
        run_step(&mut s, &plan);
    }
    assert_eq!(batch_steps, [false, true, false, true, false, true]);
}

#[test]
fn batch_work_progresses_while_interactive_prompts_keep_arriving() {
    let mut s = hybrid(64, 16);
    s.add(seq(1, Priority::Batch, vec![1; 30]));
    for next in 100..120 {
        // A new interactive prompt every step, each finished at once.
        s.add(seq(next, Priority::Interactive, vec![9; 5]));
        let plan = s.schedule();
        run_step(&mut s, &plan);
        for p in &plan {
            if p.seq != 1 {
                s.remove(p.seq);
            }
        }
    }
    // Ten of the twenty steps carried batch work: 30 prompt tokens in 16-token
    // chunks, then decodes.
    let batch = s.get(1).expect("seq 1");
    assert!(batch.num_computed >= 30, "{}", batch.num_computed);
    assert!(batch.output().len() >= 8, "{:?}", batch.output());
}

#[test]
fn a_shared_prefix_is_computed_once() {
    let mut s = scheduler(64, 100, 8);
    let prompt: Vec<u32> = (0..10).collect();
    s.add(seq(1, Priority::Interactive, prompt.clone()));
    let plan = s.schedule();
    run_step(&mut s, &plan);
    s.add(seq(2, Priority::Interactive, prompt));
    let plan = s.schedule();
    // Two full blocks (8 tokens) are reused; the last two prompt tokens are not.
    assert_eq!(
        plan[1],
        Scheduled {
            seq: 2,
            num_tokens: 2
        }
    );
    let two = s.get(2).expect("seq 2");
    assert_eq!(two.cached_prompt_tokens, 8);
    assert_eq!(
        two.block_table[..2],
        s.get(1).expect("seq 1").block_table[..2]
    );
}

#[test]
fn running_out_of_blocks_preempts_the_latest_batch_sequence() {
    // 4 blocks of 4 tokens: two 6-token prompts take 2 blocks each.
    let mut s = scheduler(4, 100, 8);
    s.add(seq(1, Priority::Interactive, vec![1; 6]));
    s.add(seq(2, Priority::Batch, vec![2; 6]));
    let plan = s.schedule();
    assert_eq!(plan.len(), 2);
    run_step(&mut s, &plan);
    // Decoding to 8 tokens fits; the 9th token of each needs a third block.
    for _ in 0..2 {
        let plan = s.schedule();
        run_step(&mut s, &plan);
    }
    let plan = s.schedule();
    assert_eq!(
        plan,
        [Scheduled {
            seq: 1,
            num_tokens: 1
        }]
    );
    assert_eq!(s.num_preemptions(), 1);
    assert_eq!(s.get(2).expect("seq 2").num_computed, 0);
}

#[test]
fn prefix_lookups_count_once_per_admission_not_per_retry() {
    // 3 blocks: the first 9-token prompt takes them all, so the second (same
    // prefix: 2 cached blocks plus 1 new) does not fit until the first ends.
    let mut s = scheduler(3, 100, 8);
    s.add(seq(1, Priority::Interactive, vec![5; 9]));
    let plan = s.schedule();
    run_step(&mut s, &plan);
    assert_eq!(s.prefix_cache_stats().queried_blocks, 2);
    let mut second = vec![5; 9];
    second.extend([6; 3]);
    s.add(seq(2, Priority::Interactive, second));
    for _ in 0..2 {
        let plan = s.schedule();
        assert!(plan.iter().all(|p| p.seq == 1), "{plan:?}");
        run_step(&mut s, &plan);
    }
    assert_eq!(
        s.prefix_cache_stats(),
        PrefixCacheStats {
            queried_blocks: 2,
            hit_blocks: 0
        },
        "failed admissions are not lookups"
    );
    s.remove(1);
    let plan = s.schedule();
    assert_eq!(plan.len(), 1);
    assert_eq!(
        s.prefix_cache_stats(),
        PrefixCacheStats {
            queried_blocks: 4,
            hit_blocks: 2
        }
    );
}

#[derive(Debug, Clone)]
enum Event {
    Arrive { len: usize, batch: bool },
    Abort(usize),
    Finish(usize),
    Step,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (1usize..40, any::<bool>()).prop_map(|(len, batch)| Event::Arrive { len, batch }),
        any::<usize>().prop_map(Event::Abort),
        any::<usize>().prop_map(Event::Finish),
        Just(Event::Step),
        Just(Event::Step),
        Just(Event::Step),
    ]
}

proptest! {
    /// Random arrivals, aborts, completions, pool sizes and batch rules: the
    /// budget, the batch prompt-token cap and the running cap hold every
    /// step, every scheduled sequence has blocks for its tokens, reference
    /// counts match the block tables, and once everything is gone every block
    /// is free (a double free would panic in the pool).
    #[test]
    fn scheduler_invariants(
        num_blocks in 12usize..40,
        budget in 1usize..48,
        max_seqs in 1usize..8,
        batch_prefill in 1usize..48,
        hold in any::<bool>(),
        events in prop::collection::vec(event(), 1..150),
    ) {
        let mut s = scheduler(num_blocks, budget, max_seqs);
        s.config.max_batch_prefill_tokens = batch_prefill;
        s.config.hold_batch_for_interactive_prefill = hold;
        let mut next_id = 0u64;
        let mut ids: Vec<SeqId> = Vec::new();
        for e in events {
            match e {
                // Only prompts that fit the pool are admitted (the engine rejects others).
                Event::Arrive { len, batch } if len.div_ceil(BS) < num_blocks => {
                    next_id += 1;
                    let p = if batch { Priority::Batch } else { Priority::Interactive };
                    s.add(seq(next_id, p, (0..len as u32).map(|t| t % 5).collect()));
                    ids.push(next_id);
                }
                Event::Abort(i) | Event::Finish(i) if !ids.is_empty() => {
                    let id = ids.swap_remove(i % ids.len());
                    prop_assert!(s.remove(id).is_some());
                }
                Event::Step => {
                    let plan = s.schedule();
                    let total: usize = plan.iter().map(|p| p.num_tokens).sum();
                    prop_assert!(total <= budget);
                    let batch_prompt: usize = plan
                        .iter()
                        .filter(|p| {
                            let q = s.get(p.seq).expect("scheduled sequence exists");
                            q.priority == Priority::Batch && q.num_uncomputed() > 1
                        })
                        .map(|p| p.num_tokens)
                        .sum();
                    prop_assert!(batch_prompt <= batch_prefill);
                    prop_assert!(s.num_running() <= max_seqs);
                    for p in &plan {
                        let q = s.get(p.seq).expect("scheduled sequence exists");
                        prop_assert!(p.num_tokens >= 1);
                        prop_assert!(q.num_computed + p.num_tokens <= q.tokens.len());
                        prop_assert!(q.block_table.len() * BS >= q.num_computed + p.num_tokens);
                    }
                    run_step(&mut s, &plan);
                }
                _ => {}
            }
            let mut refs = vec![0u32; num_blocks];
            for id in &ids {
                for &b in &s.get(*id).expect("live sequence").block_table {
                    refs[b as usize] += 1;
                }
            }
            for (b, &r) in refs.iter().enumerate() {
                prop_assert_eq!(s.pool().ref_count(b as BlockId), r);
            }
        }
        for id in ids {
            s.remove(id);
        }
        prop_assert_eq!(s.pool().num_free(), num_blocks);
    }
}
