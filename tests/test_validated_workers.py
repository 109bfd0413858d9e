"""Workers validated by morphic or pydantic behave the same in every mode, Ray included."""

from __future__ import annotations

import morphic
import pydantic
import pytest
from conftest import ALL_MODES, POOL_MODES
from pydantic import Field

from concurry_ray import Worker, WorkerInitError


class TypedWorker(Worker, morphic.Typed):
    name: str
    multiplier: int = Field(default=2, ge=1)

    def process(self, x: int) -> int:
        return x * self.multiplier


class ModelWorker(Worker, pydantic.BaseModel):
    name: str
    multiplier: int = Field(default=2, ge=1)

    def process(self, x: int) -> int:
        return x * self.multiplier


class MorphicValidated(Worker):
    @morphic.validate
    def __init__(self, multiplier: int = 2):
        self.multiplier = multiplier
        self.count = 0

    @morphic.validate
    def process(self, x: int, offset: float = 0.0) -> float:
        self.count += 1
        return x * self.multiplier + offset


class PydanticValidated(Worker):
    @pydantic.validate_call
    def __init__(self, multiplier: int):
        self.multiplier = multiplier

    @pydantic.validate_call
    def process(self, x: int, offset: float = 0.0) -> float:
        return x * self.multiplier + offset


MODELS = [TypedWorker, ModelWorker]
DECORATED = [MorphicValidated, PydanticValidated]


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_model_workers_validate_fields(cls, mode, mode_opts):
    opts = mode_opts(mode, max_workers=2 if mode in POOL_MODES else 1)
    with cls.options(**opts).init(name="p", multiplier="3") as pool:
        assert [f.result(timeout=30) for f in [pool.process(i) for i in range(4)]] == [0, 3, 6, 9]
    with pytest.raises(WorkerInitError, match="multiplier") as info:
        cls.options(**mode_opts(mode)).init(name="p", multiplier=0)
    assert "greater than or equal to 1" in str(info.value.__cause__)


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("cls", DECORATED, ids=lambda c: c.__name__)
def test_validated_methods_coerce_inside_the_worker(cls, mode, mode_opts):
    with cls.options(**mode_opts(mode, max_workers=2 if mode in POOL_MODES else 1)).init(multiplier="5") as pool:
        futures = [pool.process(str(i), offset="0.5") for i in range(4)]
        assert [f.result(timeout=30) for f in futures] == [0.5, 5.5, 10.5, 15.5]
        with pytest.raises(pydantic.ValidationError, match="int"):
            pool.process("five").result(timeout=30)
    with pytest.raises(WorkerInitError) as info:
        cls.options(**mode_opts(mode)).init(multiplier="many")
    assert "unable to parse string as an integer" in str(info.value.__cause__)
