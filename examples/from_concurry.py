"""A program written for concurry 0.13.2 with its public API only: renaming the import is the only change.

It uses concurry's enums and spellings, the @worker decorator, LimitSet with config, LimitPool,
try_acquire(...).successful, Executor, wait/gather with ReturnWhen, wrap_future, ProgressBar over a
dict and Timer, then the same worker class as a pool of two Ray actors. See docs/compat.md.
"""

import time

import ray

from concurry_ray import (
    CallLimit,
    ExecutionMode,
    Executor,
    LimitPool,
    LimitSet,
    LoadBalancingAlgorithm,
    ProgressBar,
    RateLimit,
    RateLimitAlgorithm,
    RateWindow,
    ReturnWhen,
    Timer,
    Worker,
    gather,
    wait,
    worker,
    wrap_future,
)


@worker(mode="thread", max_workers=3)
class Scorer(Worker):
    def __init__(self, bonus: int):
        self.bonus = bonus

    def score(self, text: str) -> int:
        return len(text) + self.bonus


class Caller(Worker):
    """Calls an API under a per-account budget; the account comes from the LimitPool's config."""

    def call(self, prompt: str) -> str:
        with self.limits.acquire(requested={"tokens": 10}) as acq:
            acq.update(usage={"tokens": 7})
            return f"{acq.config['account']}:{prompt}"


def main() -> None:
    scorer = Scorer.options(load_balancing=LoadBalancingAlgorithm.LeastActiveLoad).init(bonus=1)
    futures = [scorer.score(word) for word in ["a", "bb", "ccc"]]
    done, not_done = wait(futures, return_when=ReturnWhen.ALL_COMPLETED, timeout=10)
    print("scores:", gather(futures, timeout=10), len(done), len(not_done))
    scorer.stop()

    limits = LimitSet(
        limits=[RateLimit(key="tokens", window=RateWindow.Minutely, capacity=1000, algorithm=RateLimitAlgorithm.TokenBucket),
                CallLimit(window="per_second", capacity=50)],
        shared=True, mode="thread", config={"account": "A"},
    )
    acq = limits.try_acquire(requested={"tokens": 5})
    print("try_acquire successful:", acq.successful, acq.config)
    acq.update(usage={"tokens": 5})
    acq.release()

    pool = LimitPool(limit_sets=[
        LimitSet(limits=[RateLimit(key="tokens", window=60, capacity=100, algorithm="SlidingWindow")],
                 shared=True, mode="thread", config={"account": name})
        for name in ["A", "B"]
    ], load_balancing="round_robin")
    caller = Caller.options(mode=ExecutionMode.Threads, limits=pool).init()
    print("accounts:", sorted(gather([caller.call(str(i)) for i in range(4)], timeout=10)))
    caller.stop()

    with Executor(mode="thread", max_workers=2) as executor:
        print("executor:", list(executor.map(abs, [-1, -2, 3])), executor.submit(pow, 2, 5).result())

    print("wrap_future:", wrap_future(42).result())
    print("progress:", [pair for pair in ProgressBar({"x": 1, "y": 2}, disable=True)])
    with Timer(task="sleep", silent=True) as timer:
        time.sleep(0.05)
    print("timer ok:", timer.time_taken_sec >= 0.05)

    ray.init(num_cpus=2, include_dashboard=False)  # concurry needs it; concurry_ray would start one itself
    ray_scorer = Scorer.options(mode=ExecutionMode.Ray, max_workers=2, actor_options={"num_cpus": 0.1}).init(bonus=10)
    print("ray scores:", gather([ray_scorer.score(word) for word in ["a", "bb"]], timeout=60))
    ray_scorer.stop()


if __name__ == "__main__":
    main()
