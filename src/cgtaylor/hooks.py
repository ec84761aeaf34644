"""Confidence-Gated Taylor as diffusers hooks: one on the transformer, one on each block from the gate's probe on.

The transformer hook learns which step a call is (and whether a new trajectory began); the first block's hook
(on block ``config.probe_block``, the first by default) compares the block's output with its own Taylor forecast
and decides; the blocks after it pass their input through on forecast steps, and the last block then returns
the forecast of its own output.
"""

from __future__ import annotations

import inspect
import logging
import weakref

import torch
from diffusers.hooks.hooks import BaseState, CacheContext, ModelHook, StateManager

from . import _diffusers
from .blocks import block_metadata, hidden_output, identity_output
from .config import CGTaylorConfig
from .decide_ahead import forecasts_ahead
from .error_feedback import apply_feedback, feedback_scale
from .forecast_budget import Budget, gated_steps
from .gate import GateDecision, SharedDecisions, decide
from .gate_scope import follows_leader, measure_error
from .parallel import context_parallel_group, relative_l1
from .stats import CGTaylorStats, StepRecord
from .taylor import TaylorLadder, make_ladder
from .threshold_schedule import effective_threshold

DEFAULT_CONTEXT = "default"
logger = logging.getLogger("cgtaylor")


class CGTaylorState(BaseState):
    """Per cache context: the two ladders and where this context is in its trajectory."""

    def __init__(self, config: CGTaylorConfig):
        self.config = config
        self.ladder_options = dict(formula=config.taylor_formula, hermite_scale=config.hermite_scale,
                                   fit_points=config.fit_points, dtype=config.cache_dtype, device=config.cache_device)
        self.first = make_ladder(config.first_block_order, **self.ladder_options)
        self.last = make_ladder(config.last_block_order, **self.ladder_options)
        self.modules: dict = {}  # forecast="modules": child name -> its ModuleCache
        self.start_trajectory(None)

    def new_ladder(self) -> TaylorLadder:
        """A forecaster for one block child (forecast="modules"), of the last block's order."""
        return make_ladder(self.config.last_block_order, **self.ladder_options)

    def start_trajectory(self, num_steps: int | None) -> None:
        self.first.clear()
        self.last.clear()
        self.modules.clear()
        self.num_steps = num_steps
        self.calls = 0
        self.step = 0
        self.last_timestep: float | torch.Tensor | None = None  # a tensor until its value is needed
        self.last_step_index: int | None = None
        self.consecutive_forecasts = 0
        self.forecasts = 0  # forecast steps so far in this trajectory (forecast_budget counts them)
        self.decision = GateDecision(True, "first")
        self.planned_through = -1  # decide_ahead: the last step this context's plan forecasts
        self.first_output: torch.Tensor | None = None
        self.record: StepRecord | None = None
        self.gamma: torch.Tensor | None = None  # error_feedback="scale": this step's per-sample scale
        self.previous_first: torch.Tensor | None = None  # analysis mode only
        self.previous_last: torch.Tensor | None = None

    @property
    def skipping(self) -> bool:
        return not (self.decision.compute or self.config.analysis)

    @property
    def forecaster_ready(self) -> bool:
        """Whether a forecast step has something to stand in for the skipped computation."""
        return bool(self.modules) if self.config.forecast == "modules" else self.last.ready

    @property
    def cache_bytes(self) -> int:
        return self.first.nbytes + self.last.nbytes + sum(cache.nbytes for cache in self.modules.values())

    def reset(self, *args, **kwargs) -> None:
        self.start_trajectory(None)


class CGTaylorController:
    """The method itself, shared by the hooks of one transformer."""

    def __init__(self, config: CGTaylorConfig, steps_provider=None, transformer: torch.nn.Module | None = None):
        self.config = config
        # Weak, as the transformer holds this controller through its hooks.
        self._transformer = weakref.ref(transformer) if transformer is not None else lambda: None
        self.state_manager = StateManager(CGTaylorState, (config,))
        self.shared = SharedDecisions()
        self.stats = CGTaylorStats()
        self.steps_provider = steps_provider
        self._warned_steps: int | None = None

    def _state(self) -> CGTaylorState:
        return self.state_manager.get_state()

    def _context_name(self) -> str:
        return self.state_manager.context.name

    def _resolve_num_steps(self, context: CacheContext) -> int | None:
        if context.num_inference_steps is not None:
            return int(context.num_inference_steps)
        if self.steps_provider is not None:
            steps = self.steps_provider()
            if steps:
                return int(steps)
        return self.config.num_inference_steps

    @torch.compiler.disable
    def begin_call(self, timestep) -> None:
        if _diffusers.current_context(self.state_manager) is None:
            # DiT and several pipeline variants never set a cache context.
            self.state_manager.set_context(CacheContext(DEFAULT_CONTEXT))
        context = self.state_manager.context
        state = self._state()
        # Reading the timestep's value waits for the device: only done where the step index is unknown.
        timestep = _timestep_value(timestep) if context.step_index is None else _timestep_tensor(timestep)
        if state.calls == 0 or self._starts_new_trajectory(state, context, timestep):
            state.start_trajectory(self._resolve_num_steps(context))
            self._warn_if_nothing_to_skip(state.num_steps)
            self.shared.start_trajectory(context.name)
            self.stats.records = [r for r in self.stats.records if r.context != context.name]
            self.stats.cache_bytes.pop(context.name, None)
        elif context.num_inference_steps is not None:
            state.num_steps = int(context.num_inference_steps)
        state.step = context.step_index if context.step_index is not None else state.calls
        state.calls += 1
        state.last_timestep = timestep
        state.last_step_index = state.step
        if self.config.decide_ahead:
            self._begin_planned_step(state, context.name)

    def _begin_planned_step(self, state: CGTaylorState, name: str) -> None:
        """decide_ahead: settle before any block runs whether a computed step planned this one as a forecast."""
        step = state.step
        if follows_leader(self.config.gate_scope) and not self.shared.is_leader(name):
            recorded = self.shared.lookup(step)
            planned = recorded is not None and not recorded.compute
        else:
            planned = step <= state.planned_through
        if not (planned and step > 0 and state.forecaster_ready):
            state.decision = GateDecision(True, "pending")  # decided after the first block, which computes
            return
        state.decision = GateDecision(False, "planned")
        state.consecutive_forecasts += 1
        state.forecasts += 1
        state.record = StepRecord(context=name, step=step, timestep=state.last_timestep,
                                  computed=self.config.analysis, reason="planned", would_compute=False
                                  if self.config.analysis else None)
        self.stats.records.append(state.record)

    def skips_probe(self) -> bool:
        """Whether the first block is skipped too: a step planned ahead, forecast from the last block's ladder."""
        return self.config.decide_ahead and self.config.forecast == "last_block" and self._state().skipping

    def _warn_if_nothing_to_skip(self, num_steps: int | None) -> None:
        if num_steps is None or self._warned_steps == num_steps or self.config.compute_steps is not None:
            return  # a forced schedule says itself which steps are computed
        if gated_steps(num_steps, self.config.warmup_steps) == 0:
            logger.warning(
                "CG-Taylor cannot skip any step of a %d-step run with warmup_steps=%d (the first, warm-up and last "
                "steps are always computed): expect no speedup on few-step samplers",
                num_steps, self.config.warmup_steps,
            )
        self._warned_steps = num_steps

    @staticmethod
    def _starts_new_trajectory(state: CGTaylorState, context: CacheContext, timestep: float | None) -> bool:
        if context.step_index is not None:
            return state.last_step_index is not None and context.step_index <= state.last_step_index
        if timestep is not None and state.last_timestep is not None and timestep > state.last_timestep:
            return True  # diffusion timesteps fall within a trajectory
        return state.num_steps is not None and state.calls >= state.num_steps

    @torch.compiler.disable
    def after_first_block(self, first_output: torch.Tensor) -> None:
        config, state, name = self.config, self._state(), self._context_name()
        step = state.step
        if state.first.ready and state.first.shape != first_output.shape:
            state.first.clear()  # batch or resolution changed without a new trajectory being seen
            state.last.clear()
            state.modules.clear()
        if config.decide_ahead and not state.decision.compute:
            # a step planned ahead (reached here in analysis mode, or with forecast="modules"): nothing to decide
            if config.analysis:
                self._record_analysis(state, first_output, self._measure_first_block(state, first_output)[1])
            return
        first_forecast, error, sample_errors, group = self._measure_first_block(state, first_output)
        follows = follows_leader(config.gate_scope) and not self.shared.is_leader(name)
        decision = self.shared.lookup(step) if follows else None
        threshold = effective_threshold(config.threshold, config.threshold_schedule, step, state.num_steps,
                                        config.step_scales)
        budget = self._budget(state)
        budget_forced = None
        if budget is not None and step >= config.warmup_steps and 0 < step < state.num_steps - 1:
            budget_forced = budget.forced(state.forecasts, step, state.num_steps)
            threshold *= budget.threshold_scale(state.forecasts, step, state.num_steps)
        if decision is None:
            decision = decide(
                step=step,
                num_steps=state.num_steps,
                warmup_steps=config.warmup_steps,
                first_block_error=error,
                threshold=threshold,
                last_block_ready=state.forecaster_ready,
                consecutive_forecasts=state.consecutive_forecasts,
                max_consecutive_forecasts=config.max_consecutive_forecasts,
                compute_steps=config.compute_steps,
                budget_forced=budget_forced,
                gate_last_step=config.gates_last_step,
            )
            if config.decide_ahead and not decision.compute:
                decision = GateDecision(True, "refresh")  # the plan made no forecast of this step
            if self.shared.is_leader(name):
                self.shared.record(step, decision)
        elif not decision.compute and not state.forecaster_ready:
            decision = GateDecision(True, "no_history")
        if config.decide_ahead and not follows:
            self._plan_ahead(state, name, error)

        state.decision = decision
        state.gamma = None
        if first_forecast is not None and config.error_feedback == "scale" and (config.analysis or not decision.compute):
            state.gamma = feedback_scale(first_forecast, first_output, state.first.factors[0], group)
        if decision.compute:
            state.first.update(first_output, step)
            state.consecutive_forecasts = 0
        else:
            state.consecutive_forecasts += 1
            state.forecasts += 1
        state.first_output = first_output if config.forecast == "residual" else None
        state.record = StepRecord(
            context=name,
            step=step,
            timestep=state.last_timestep,
            computed=decision.compute or config.analysis,
            reason=decision.reason,
            first_block_error=error,
            threshold=threshold,
            sample_errors=sample_errors,
            feedback_gamma=None if state.gamma is None else float(state.gamma.mean()),
        )
        if config.analysis:
            state.record.would_compute = decision.compute
        self._record_analysis(state, first_output, error)
        self.stats.records.append(state.record)

    def _record_analysis(self, state: CGTaylorState, first_output: torch.Tensor, error: float | None) -> None:
        if not self.config.analysis:
            return
        if state.record.first_block_error is None:
            state.record.first_block_error = error
        if state.previous_first is not None and state.previous_first.shape == first_output.shape:
            state.record.first_block_change = relative_l1(state.previous_first, first_output)
        state.previous_first = first_output.detach()

    def _plan_ahead(self, state: CGTaylorState, name: str, error: float | None) -> None:
        """decide_ahead, on a computed step (before its refresh): which of the next steps are forecast
        (:mod:`cgtaylor.decide_ahead`)."""
        config, step = self.config, state.step
        cap = config.max_consecutive_forecasts
        first = step + 1
        if state.num_steps is None:
            end = first + (cap or 1)
        else:
            end = state.num_steps if config.gates_last_step else state.num_steps - 1
        candidates = range(first, end) if first >= config.warmup_steps else range(0)  # a plan starts after the warm-up
        thresholds = [effective_threshold(config.threshold, config.threshold_schedule, s, state.num_steps,
                                          config.step_scales)
                      for s in candidates[:cap]]
        last_refresh = state.first.last_step
        count = forecasts_ahead(error=error, measured_distance=0 if last_refresh is None else step - last_refresh,
                                order=config.first_block_order, thresholds=thresholds, cap=cap)
        state.planned_through = step + count
        if follows_leader(config.gate_scope) and self.shared.is_leader(name):
            for planned in range(step + 1, step + count + 1):
                self.shared.record(planned, GateDecision(False, "planned"))

    def _budget(self, state: CGTaylorState) -> Budget | None:
        share = self.config.forecast_budget
        if share is None:
            return None
        if state.num_steps is None:
            raise ValueError("CGTaylorConfig.forecast_budget needs the run's step count, and neither the cache context "
                             "nor a pipeline told it: call through a pipeline, or set num_inference_steps")
        return Budget.for_run(share, state.num_steps, self.config.warmup_steps)

    def _measure_first_block(self, state: CGTaylorState, first_output: torch.Tensor):
        """The first block's forecast, the gate's error (and per-sample errors) and the context parallel group;
        all None where the error is not measured at this step."""
        config = self.config
        # deciding ahead, the last warm-up step measures too: its plan covers the first steps after the warm-up
        first_measured = config.warmup_steps - 1 if config.decide_ahead else config.warmup_steps
        measured = state.step >= first_measured or config.analysis or config.compute_steps is not None
        if not (state.first.ready and measured):
            return None, None, None, None
        # Under context parallelism all ranks sum the error over their shards: one decision for all.
        group = context_parallel_group(self._transformer())
        forecast = state.first.forecast(state.step)
        error, sample_errors = measure_error(config.gate_scope, forecast, first_output, group)
        return forecast, error, sample_errors, group

    def _last_block_forecast(self, state: CGTaylorState, like: torch.Tensor) -> torch.Tensor:
        forecast = state.last.forecast(state.step)
        if state.gamma is not None:
            forecast = apply_feedback(forecast, state.last.factors[0], state.gamma)
        if self.config.forecast == "residual":
            forecast = forecast.to(state.first_output.device) + state.first_output
        return forecast.to(dtype=like.dtype, device=like.device)

    @torch.compiler.disable
    def forecast_last_block(self, like: torch.Tensor) -> torch.Tensor:
        state = self._state()
        forecast = self._last_block_forecast(state, like)
        self._finish_step(state)
        return forecast

    @torch.compiler.disable
    def after_last_block(self, last_output: torch.Tensor) -> None:
        state = self._state()
        if self.config.analysis:
            if state.last.ready and state.last.shape == last_output.shape:
                forecast = self._last_block_forecast(state, last_output)
                state.record.last_block_error = relative_l1(forecast, last_output)
            if state.previous_last is not None and state.previous_last.shape == last_output.shape:
                state.record.last_block_change = relative_l1(state.previous_last, last_output)
            state.previous_last = last_output.detach()
        if state.decision.compute:
            if state.last.ready and state.last.shape != last_output.shape:
                state.last.clear()
            target = last_output - state.first_output if self.config.forecast == "residual" else last_output
            state.last.update(target, state.step)
        self._finish_step(state)

    def _finish_step(self, state: CGTaylorState) -> None:
        state.first_output = None
        name = self._context_name()
        self.stats.cache_bytes[name] = max(self.stats.cache_bytes.get(name, 0), state.cache_bytes)

    def reset(self) -> None:
        self.state_manager.reset()
        self.shared.reset()


class CGTaylorTransformerHook(_diffusers.StatefulModelHook):
    """On the transformer: sets a default context, finds the step index and new trajectories."""

    def __init__(self, controller: CGTaylorController):
        super().__init__()
        self.controller = controller
        self.state_manager = controller.state_manager  # found by diffusers' cache_context
        self._timestep_index: int | None = None

    def initialize_hook(self, module):
        parameters = list(inspect.signature(module.forward).parameters)
        self._timestep_index = parameters.index("timestep") if "timestep" in parameters else None
        return module

    def pre_forward(self, module, *args, **kwargs):
        timestep = kwargs.get("timestep")
        if timestep is None and self._timestep_index is not None and self._timestep_index < len(args):
            timestep = args[self._timestep_index]
        self.controller.begin_call(timestep)
        return args, kwargs

    def reset_state(self, module):
        self.controller.reset()
        return module


def _timestep_tensor(timestep) -> torch.Tensor | float | None:
    """The (largest) timestep of a call, still on its device."""
    if isinstance(timestep, torch.Tensor):
        return timestep.detach().float().max() if timestep.numel() else None
    return None if timestep is None else float(timestep)


def _timestep_value(timestep) -> float | None:
    timestep = _timestep_tensor(timestep)
    return float(timestep.item()) if isinstance(timestep, torch.Tensor) else timestep


class _BlockHook(ModelHook):
    def __init__(self, controller: CGTaylorController):
        super().__init__()
        self.controller = controller
        self._metadata = None

    def initialize_hook(self, module):
        self._metadata = block_metadata(module)
        return module

    def _hidden(self, output):
        return hidden_output(self._metadata, output)

    def _pass_through(self, args, kwargs, hidden_states=None):
        """The block's output as if it were the identity (optionally with other hidden states)."""
        return identity_output(self._metadata, args, kwargs, hidden_states)


class FirstBlockHook(_BlockHook):
    def new_forward(self, module, *args, **kwargs):
        if self.controller.skips_probe():
            return self._pass_through(args, kwargs)
        output = self.fn_ref.original_forward(*args, **kwargs)
        self.controller.after_first_block(self._hidden(output))
        return output


class MiddleBlockHook(_BlockHook):
    def new_forward(self, module, *args, **kwargs):
        if self.controller._state().skipping:
            return self._pass_through(args, kwargs)
        return self.fn_ref.original_forward(*args, **kwargs)


class ModulesLastBlockHook(_BlockHook):
    """forecast="modules": the last block runs (its children forecast on a skipped step); then the step ends."""

    def new_forward(self, module, *args, **kwargs):
        output = self.fn_ref.original_forward(*args, **kwargs)
        self.controller._finish_step(self.controller._state())
        return output


class LastBlockHook(_BlockHook):
    def new_forward(self, module, *args, **kwargs):
        if self.controller._state().skipping:
            like = _diffusers.block_argument(self._metadata, self._metadata.hidden_states_argument_name, args, kwargs)
            return self._pass_through(args, kwargs, self.controller.forecast_last_block(like))
        output = self.fn_ref.original_forward(*args, **kwargs)
        self.controller.after_last_block(self._hidden(output))
        return output
