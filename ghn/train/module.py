"""`GHNModule`: the LightningModule that trains a GHN on the task loss of the networks it predicts.

Each step takes a meta-batch of m architectures and one data batch; every architecture's parameters are predicted
with the GHN and the network runs on the batch through `torch.func.functional_call`, so the loss backpropagates into
the GHN (GHN-2, Knyazev et al., 2021). BatchNorm runs with batch statistics.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, defaultdict
from dataclasses import replace
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import Tensor, nn
from torch.func import functional_call

from ghn.data.architectures import Architecture
from ghn.data.metrics import evaluate, task_loss
from ghn.errors import CheckpointError, ConfigError
from ghn.nn import GHN, GHN_PRESETS, GHNConfig
from ghn.nn.normalize import ParamScale, deviation, param_scales, reference_std
from ghn.predict import blend_with_init, is_blended
from ghn.train.config import OptimConfig

__all__ = ["GHNModule"]

_STAGE_FIELDS = ("init_blend", "table_spectrum", "signal_scale")  # config fields a stage `init_from` may change


class GHNModule(L.LightningModule):
    """Trains a `GHN`.

    Args:
        ghn: a preset name ('logah-tiny', ...) or a full `GHNConfig`.
        ghn_overrides: `GHNConfig` fields to replace in the preset (e.g. {'normalize': false}); nested configs merge
            field by field (e.g. {'decoder': {'rank': 64}} keeps the preset's other decoder fields).
        optim: optimizer and schedule.
        deviation_penalty: weight of the mean `ghn.nn.normalize.deviation` of the predicted biases and norm parameters
            (0 at their init, without limit at their bounds), added to the task loss: it keeps them near the init,
            where networks stay trainable, instead of at the bounds that the loss of untrained networks pulls them to.
        deviation_max_penalty: weight of the largest single deviation among those parameters, added too: a mean
            lets one tensor (the norm feeding a head) sit at its bound at little cost. 0.05 keeps every norm scale
            of the shipped GHNs within 0.18 of 1 (bound 0.25).
        noise: fraction of each predicted weight's variance replaced by fresh Gaussian noise of the same std before
            the task loss, so the GHN learns predictions that keep their value when blended with the model's own
            init. 0.5 helped fine-tuning on digits without the lookahead (v2); with it, 0 trains better predictions
            (v5; benchmarks/RESULTS.md, issue 11).
        init_blend: the `GHNConfig.init_blend` the trained GHN ships with (the fraction of each weight's variance
            `ghn.predict` takes from the model's own init; validation blends the same way); None: `noise`. 0.08 on
            digits: a little of the own init in every weight lets ViTs with timm's 0.02 init fine-tune level with
            their default init (d16 in RESULTS.md; 0.5 was best before `own_spectrum`); 0 on pydoc text, and 0 for
            the shipped digits GHN, whose position tables at their spectrum (`table_spectrum`) now serve the ViTs.
        own_spectrum: `GHNConfig.own_spectrum`: every predicted weight is put at the spectrum of the model's own
            init (`ghn.nn.spectrum`) in training (fresh draws of the init, so the GHN learns directions that work at
            that scale), in validation (the built network's values) and in `ghn.predict` alike. Fine-tuning from
            such predictions beat the raw ones on digits and text (benchmarks/RESULTS.md, issue 11).
        centered_units: `GHNConfig.centered_units`: no predicted weight has a part all its output units share and
            no predicted bias a shared shift, so no prediction switches off a whole no-norm ReLU layer. On digits
            with plain networks in the space it fixed a held-out conv stack predicted dead and raised the floor
            counts (d13 in RESULTS.md); the pydoc text recipe was measured without it and keeps it off.
        table_spectrum: `GHNConfig.table_spectrum`: a table held as one row (a ViT's (1, N, d) position embedding)
            is put at the own init's spectrum as the N x d matrix it is, so its positions are apart (off, the GHN
            predicted them near-copies and ViTs fine-tuned behind their own init; RESULTS.md, issue 11).
        signal_scale: `GHNConfig.signal_scale`: the linear/conv weights of a network with no norm at the fan-in
            rule's signal-keeping std where their own init is smaller (at most 3x; ghn/nn/normalize.py), in
            training, validation and `ghn.predict` alike: PyTorch's default init vanishes a plain stack's signal,
            so no prediction at its scale reaches the head. On by default (the digits recipe; a no-op for networks
            with norms: every text space; RESULTS.md, issue 11).
        lookahead_steps: k > 0 adds the task loss after k Adam steps of the predicted network (lr `lookahead_lr`,
            first-order: the update directions are constants) on the second half of the batch to the loss at the
            prediction on the first half, so the GHN is rewarded for predictions that fine-tune well, not only for
            the loss before training (issue 11's k-step objective).
        lookahead_lr: the inner Adam learning rate; k steps at lr cover about k * lr / 1e-3 fine-tuning steps at
            the evaluation protocol's lr 1e-3. Defaults (2 steps at 0.01) are the digits recipe (v5 in RESULTS.md).
        init_from: a trained GHN to start from instead of a fresh one (a directory or `.safetensors` file that
            `GHN.load` reads, e.g. pretrained/logah-tiny.digits), so a GHN can be trained in stages
            (e.g. on more of a family it fits poorly; RESULTS.md, issue 11). Its config must be the one `ghn`,
            `ghn_overrides` and the flags above build, `init_blend`, `table_spectrum` and `signal_scale` aside (this
            run's are the ones it ships with).
        model_cache_size: built target networks kept per process (they hold buffers and run functional calls).
    """

    def __init__(
        self,
        ghn: str | GHNConfig = "logah-tiny",
        *,
        ghn_overrides: dict[str, Any] | None = None,
        optim: OptimConfig = OptimConfig(),
        deviation_penalty: float = 0.1,
        deviation_max_penalty: float = 0.05,
        noise: float = 0.0,
        init_blend: float | None = 0.08,
        own_spectrum: bool = True,
        centered_units: bool = True,
        table_spectrum: bool = False,
        signal_scale: bool = True,
        lookahead_steps: int = 2,
        lookahead_lr: float = 0.01,
        init_from: str | None = None,
        model_cache_size: int = 256,
    ) -> None:
        super().__init__()
        config = GHN_PRESETS.get(ghn) if isinstance(ghn, str) else ghn
        if not isinstance(config, GHNConfig):
            raise ConfigError(f"ghn must be a preset name or a GHNConfig, got {type(ghn).__name__!r}.")
        for key in ("init_blend", "own_spectrum", "centered_units", "table_spectrum", "signal_scale"):
            if key in (ghn_overrides or {}):
                raise ConfigError(f"Set GHNConfig.{key} through GHNModule's `{key}` (--model.{key}).")
        config = GHNConfig.from_dict(_merged(config.to_dict(), ghn_overrides or {}))
        if not (isinstance(noise, (int, float)) and 0.0 <= noise < 1.0):
            raise ConfigError(f"noise must be a fraction in [0, 1), got {noise!r}.")
        config = replace(
            config, init_blend=noise if init_blend is None else init_blend, own_spectrum=own_spectrum,
            centered_units=centered_units, table_spectrum=table_spectrum, signal_scale=signal_scale,
        )  # fmt: skip
        if not deviation_penalty >= 0:
            raise ConfigError(f"deviation_penalty must be >= 0, got {deviation_penalty!r}.")
        if not deviation_max_penalty >= 0:
            raise ConfigError(f"deviation_max_penalty must be >= 0, got {deviation_max_penalty!r}.")
        if isinstance(lookahead_steps, bool) or not isinstance(lookahead_steps, int) or lookahead_steps < 0:
            raise ConfigError(f"lookahead_steps must be an integer >= 0, got {lookahead_steps!r}.")
        if not lookahead_lr > 0:
            raise ConfigError(f"lookahead_lr must be positive, got {lookahead_lr!r}.")
        self.save_hyperparameters({
            "ghn": config.to_dict(), "optim": optim.__dict__, "deviation_penalty": deviation_penalty,
            "deviation_max_penalty": deviation_max_penalty, "noise": noise,
            "lookahead_steps": lookahead_steps, "lookahead_lr": lookahead_lr, "init_from": init_from,
        })  # fmt: skip
        self.ghn = GHN(config)
        self.init_from = init_from
        if init_from is not None:
            self._start_from(init_from)
        self.optim = optim
        self.deviation_penalty = deviation_penalty
        self.deviation_max_penalty = deviation_max_penalty
        self.noise = noise
        self.init_blend = config.init_blend
        self.lookahead_steps = lookahead_steps
        self.lookahead_lr = lookahead_lr
        self.model_cache_size = model_cache_size
        self._models: OrderedDict[str, nn.Module] = OrderedDict()
        self._random_metrics: dict[str, dict[str, float]] = {}
        self._param_scales: dict[str, dict[str, ParamScale]] = {}
        self._bounded_names: dict[str, list[str]] = {}
        self._step_start = time.perf_counter()

    def _start_from(self, source: str) -> None:
        """Load the weights of the trained GHN `source` into this module's GHN (same config, or an error)."""
        try:
            start = GHN.load(source)
        except CheckpointError as err:
            raise CheckpointError(f"init_from {source!r}: {err}") from err
        ours, theirs = self.ghn.config.to_dict(), start.config.to_dict()
        differ = sorted(  # how the outputs are used or mapped, not the weights: each stage may set its own
            key for key in ours.keys() | theirs.keys() if key not in _STAGE_FIELDS and ours.get(key) != theirs.get(key)
        )
        if differ:
            raise ConfigError(
                f"init_from {source!r} is a GHN whose {', '.join(differ)} differ from the GHN this run builds "
                f"({', '.join(f'{k}={ours.get(k)!r} vs {theirs.get(k)!r}' for k in differ)}). Set --model.ghn, "
                "--model.ghn_overrides and the --model flags of those fields to the values it was trained with."
            )
        self.ghn.load_state_dict(start.state_dict())

    # -- target networks ------------------------------------------------------------------------------------------
    def target_model(self, arch: Architecture) -> nn.Module:
        """A built network of `arch` on this module's device (cached): its buffers and forward serve every call."""
        model = self._models.get(arch.hash)
        if model is None:
            model = arch.build(self.device)
            for param in model.parameters():
                param.requires_grad_(False)
            self._models[arch.hash] = model
            if len(self._models) > self.model_cache_size:
                self._models.popitem(last=False)
        else:
            self._models.move_to_end(arch.hash)
        return model

    # -- training -------------------------------------------------------------------------------------------------
    def transfer_batch_to_device(self, batch: dict[str, Any], device: torch.device, dataloader_idx: int) -> dict:
        """Only the data moves; architectures (configs and graphs) stay as they are."""
        if "data" in batch:
            batch = {**batch, "data": move_data_to_device(batch["data"], device)}
        return batch

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        archs: list[Architecture] = batch["archs"]
        # one (x, y) for all architectures, or one each (`GHNDataModule.batch_per_arch`)
        per_arch = batch.get("data_per_arch") or [batch["data"]] * len(archs)
        predicted = self.ghn([a.graph for a in archs])
        losses, penalties, peaks = [], [], []
        by_family: dict[str, list[Tensor]] = defaultdict(list)
        correct, count = 0, 0
        for arch, params, (x, y) in zip(archs, predicted, per_arch, strict=True):
            model = self.target_model(arch).train()
            penalties.append(self._deviation(arch, params))
            peaks.append(self._deviation(arch, params, reduce="max"))
            loss, num_correct = self._task_loss(model, self._perturbed(arch, params), x, y)
            losses.append(loss)
            by_family[arch.family].append(loss.detach())
            correct, count = correct + int(num_correct), count + y.numel()
        task = torch.stack(losses).mean()
        deviation = torch.stack(penalties).mean()
        peak = torch.stack(peaks).amax()
        loss = task + self.deviation_penalty * deviation + self.deviation_max_penalty * peak
        batch_size = x.shape[0]
        self.log("train/loss", task, prog_bar=True, batch_size=batch_size, sync_dist=True)
        self.log("train/deviation", deviation, batch_size=batch_size, sync_dist=True)
        self.log("train/deviation_max", peak, batch_size=batch_size, sync_dist=True)
        self.log("train/acc", correct / count, prog_bar=True, batch_size=batch_size, sync_dist=True)
        self.log("train/ppl", math.exp(min(float(task.detach()), 50.0)), batch_size=batch_size, sync_dist=True)
        for family, values in by_family.items():  # ranks see different families: syncing would deadlock DDP
            self.log(f"train/loss_{family}", torch.stack(values).mean(), batch_size=batch_size, rank_zero_only=True)
        elapsed = time.perf_counter() - self._step_start
        self._step_start = time.perf_counter()
        if batch_idx > 0:
            self.log("train/archs_per_s", len(archs) / elapsed, batch_size=batch_size)
            self.log("train/samples_per_s", len(archs) * batch_size / elapsed, batch_size=batch_size)
        return loss

    def _task_loss(self, model: nn.Module, params: dict[str, Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Task loss of `params` on (x, y); with `lookahead_steps` the mean of the loss at `params` on the first half
        of the batch and the loss after the inner Adam steps on the second half."""
        if not self.lookahead_steps or x.shape[0] < 2:
            return task_loss(functional_call(model, params, (x,)), y)
        half = x.shape[0] // 2
        (x0, x1), (y0, y1) = (x[:half], x[half:]), (y[:half], y[half:])
        start, num_correct = task_loss(functional_call(model, params, (x0,)), y0)
        after = self._after_adam_steps(model, params, start, x0, y0)
        end, correct_end = task_loss(functional_call(model, after, (x1,)), y1)
        return (start + end) / 2, num_correct + correct_end

    def _after_adam_steps(self, model: nn.Module, params: dict[str, Tensor], loss: Tensor, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """`params` after `lookahead_steps` AdamW-like steps on (x, y) (betas 0.9/0.999, no weight decay), each update a
        constant: the GHN's gradient flows through the values, not through the update directions."""
        names = [n for n, v in params.items() if v.requires_grad and v.is_floating_point()]
        current = dict(params)
        m = {n: torch.zeros_like(params[n], requires_grad=False) for n in names}
        v = {n: torch.zeros_like(params[n], requires_grad=False) for n in names}
        for step in range(1, self.lookahead_steps + 1):
            if step > 1:
                loss, _ = task_loss(functional_call(model, current, (x,)), y)
            grads = torch.autograd.grad(loss, [current[n] for n in names], retain_graph=True, allow_unused=True)
            for name, grad in zip(names, grads):
                if grad is None:
                    continue
                m[name].mul_(0.9).add_(grad.detach(), alpha=0.1)
                v[name].mul_(0.999).addcmul_(grad.detach(), grad.detach(), value=0.001)
                update = (m[name] / (1 - 0.9**step)) / ((v[name] / (1 - 0.999**step)).sqrt() + 1e-8)
                current[name] = current[name] - self.lookahead_lr * update
        return current

    def _deviation(self, arch: Architecture, params: dict[str, Tensor], reduce: str = "mean") -> Tensor:
        """Mean (or largest) deviation of the predicted bounded parameters (biases, norms) from their init."""
        scales = self._scales(arch)
        values = [deviation(params[name], arch.graph.params[name], scales[name], reduce=reduce)
                  for name in self._bounded(arch)]  # fmt: skip
        if not values:
            return next(iter(params.values())).new_zeros(())
        stacked = torch.stack(values)
        return stacked.amax() if reduce == "max" else stacked.mean()

    def _perturbed(self, arch: Architecture, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """`params` with `noise` of each weight-like tensor's variance replaced by Gaussian noise of its std."""
        if self.noise == 0:
            return params
        keep, add = math.sqrt(1.0 - self.noise), math.sqrt(self.noise)
        scales, out = self._scales(arch), dict(params)
        for name, value in params.items():
            if is_blended(arch.graph.params[name], scales[name]):
                out[name] = keep * value + add * value.detach().std() * torch.randn_like(value)
        return out

    def _blended(self, arch: Architecture, model: nn.Module, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """`params` as `ghn.predict` writes them: blended with the model's own init (its built values) when the GHN
        has `init_blend`, so validation scores what users get (the own spectrum is applied by the GHN itself)."""
        if not self.init_blend:
            return params
        scales, out = self._scales(arch), dict(params)
        for name, value in params.items():
            info = arch.graph.params[name]
            if is_blended(info, scales[name]):
                gain = scales[name].signal_gain if self.ghn.config.signal_scale else 1.0  # applied by the GHN
                out[name] = blend_with_init(value.clone(), model.get_parameter(name), info, self.init_blend, gain=gain)
        return out

    def _scales(self, arch: Architecture) -> dict[str, ParamScale]:
        scales = self._param_scales.get(arch.hash)
        if scales is None:
            scales = self._param_scales[arch.hash] = param_scales(arch.graph)
        return scales

    def _bounded(self, arch: Architecture) -> list[str]:
        """Owned parameters that normalization bounds rather than scales (biases, norms), computed once per arch."""
        names = self._bounded_names.get(arch.hash)
        if names is None:
            scales = self._scales(arch)
            names = [n for n, info in arch.graph.params.items() if info.node is not None
                     and reference_std(info, scales[n]) is None]  # fmt: skip
            self._bounded_names[arch.hash] = names
        return names

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad.norm() for p in self.ghn.parameters() if p.grad is not None]
        if grads:
            self.log("train/grad_norm", torch.stack(grads).norm(), batch_size=1)

    # -- validation: held-out architectures, no training of the predicted networks ----------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        data = self.trainer.datamodule.eval_batches("val")
        metrics = self.heldout_metrics(batch["archs"], data)
        for name, values in metrics.items():
            self.log(f"val/{name}", sum(values) / len(values), batch_size=len(values), sync_dist=True)

    def heldout_metrics(self, archs: list[Architecture], data: list[tuple[Tensor, Tensor]]) -> dict[str, list[float]]:
        """Metrics of GHN-predicted and of randomly initialized networks (the reference line) on `data`."""
        out: dict[str, list[float]] = defaultdict(list)
        models = [self.target_model(a) for a in archs]
        with torch.no_grad():  # the built networks' values are their own init (`GHNConfig.own_spectrum`)
            predicted = self.ghn([a.graph for a in archs], own=[dict(m.named_parameters()) for m in models])
        for arch, model, params in zip(archs, models, predicted):
            params = self._blended(arch, model, params)
            for key, value in evaluate(model, data, params=params).items():
                out[key].append(value)
            for key, value in self.random_metrics(arch, data).items():
                out[f"{key}_random"].append(value)
        return out

    def random_metrics(self, arch: Architecture, data: list[tuple[Tensor, Tensor]]) -> dict[str, float]:
        """Metrics of the family's random init (seeded by the architecture, computed once)."""
        if arch.hash not in self._random_metrics:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(arch.hash[:8], 16))
                model = arch.build(self.device)
            self._random_metrics[arch.hash] = evaluate(model, data)
        return self._random_metrics[arch.hash]

    # -- optimization ---------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.optim
        optimizer = torch.optim.AdamW(
            self.ghn.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, betas=tuple(optim.betas)
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)

        def schedule(step: int) -> float:
            if step < optim.warmup_steps:
                return (step + 1) / optim.warmup_steps
            progress = min(1.0, (step - optim.warmup_steps) / max(1, total - optim.warmup_steps))
            return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied, nested mappings merged key by key (a config's dict form)."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
