"""Supervised fine-tuning of Qwen-VL(-Chat) on Med-GRIT conversations — what ``train.sh`` launches.

    python paddlemix/tools/supervised_finetune.py CONFIG.json [--key value ...]

Arguments are PaddleNLP ``PdArgumentParser`` dataclasses read from one JSON file; command-line
``--key value`` pairs after it override the file. PaddleNLP's ``Trainer`` owns the loop,
checkpoints (``checkpoint-N`` every ``save_steps``), VisualDL logging and resume:
``--resume_from_checkpoint DIR`` continues from that checkpoint, and a run whose ``output_dir``
already holds checkpoints continues from the latest *complete* one unless ``--overwrite_output_dir``
is set (a save killed midway leaves a ``checkpoint-N`` without a readable trainer state or RNG
state; it is skipped, and the log says so).

A LoRA run (``lora: true``) saves only the adapters, plus, when it starts from a random preset,
``<output_dir>/base_model``; ``python -m paddlemix.tools.merge_lora --lora_dir OUTPUT_DIR
--output_dir MERGED`` turns them into a plain checkpoint.
"""

import glob
import json
import os
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:  # run as a script by train.sh
    sys.path.insert(0, ROOT)

import paddle  # noqa: E402
from paddlenlp.trainer import PdArgumentParser, Trainer, TrainerCallback, TrainingArguments  # noqa: E402
from paddlenlp.utils.log import logger  # noqa: E402

from paddlemix.bird.tasks import TASKS, check_task  # noqa: E402
from paddlemix.datasets.medgrit import load_medgrit  # noqa: E402
from paddlemix.datasets.sft import LengthGroupedBatchSampler, SFTCollator, SFTDataset  # noqa: E402
from paddlemix.models.qwen_vl.builder import (  # noqa: E402
    build_model,
    check_resampler_init,
    check_source,
    load_config,
    load_tokenizer,
)
from paddlemix.models.qwen_vl.cpu_adamw import CpuAdamW  # noqa: E402
from paddlemix.models.qwen_vl.vision import FrozenFeatureCache  # noqa: E402

MAX_LOGGED_SKIPS = 20  # skipped records named one per log line; the rest are counted
# Qwen-VL's fine-tuning recipe puts LoRA on the LLM's attention and MLP projections only.
LORA_TARGETS = [
    r".*transformer\.h\.\d+\.attn\.c_attn",
    r".*transformer\.h\.\d+\.attn\.c_proj",
    r".*transformer\.h\.\d+\.mlp\.w1",
    r".*transformer\.h\.\d+\.mlp\.w2",
]


@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Checkpoint directory (e.g. converted Qwen-VL-Chat) to fine-tune."}
    )
    model_preset: Optional[str] = field(
        default=None, metadata={"help": "Start from a randomly initialised preset instead (e.g. 'tiny')."}
    )
    resampler_init: str = field(
        default="random",
        metadata={
            "help": "With model_preset: 'random' (every weight random), 'spatial' (the resampler's queries "
            "attend to their own grid cell of patches, Resampler.init_spatial) or 'layout' (spatial, and the ViT's "
            "positional table the smooth sin-cos one, so each image token says where it is: "
            "QWenVisionTransformer.init_layout). A checkpoint keeps its weights."
        },
    )
    freeze_vision: bool = field(default=True, metadata={"help": "Freeze the ViT (upstream fix_vit)."})
    train_resampler: bool = field(default=True, metadata={"help": "Keep the resampler trainable when freezing."})
    lora: bool = field(
        default=False,
        metadata={
            "help": "Train LoRA adapters on the LLM's attention and MLP projections and nothing else (the ViT, "
            "resampler, embeddings and LM head stay frozen, as in Qwen-VL's LoRA recipe). Merge the result "
            "into a plain checkpoint with `python -m paddlemix.tools.merge_lora`."
        },
    )
    lora_rank: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    image_feature_cache_mb: float = field(
        default=0,
        metadata={
            "help": "With the whole vision tower frozen (else off, with a warning): keep each training image's features (up to this "
            "many MB) instead of recomputing them for every record and epoch that shows the image; equal "
            "up to the last float bits (a kept feature was computed in another batch). 0: off (a 7B "
            "image's features are 4 MB)."
        },
    )
    cpu_adamw: bool = field(
        default=True,
        metadata={
            "help": "On one CPU process, run AdamW's update in NumPy (paddlemix.models.qwen_vl.cpu_adamw: "
            "Paddle's formula and state dict, the clip folded in, never-used embedding rows skipped); "
            "false: paddle.optimizer.AdamW. Either way the same update to float32 rounding."
        },
    )


@dataclass
class DataArguments:
    train_json: str = field(default=None, metadata={"help": "Med-GRIT training file(s), comma-separated."})
    image_root: str = field(default=None, metadata={"help": "Folder the records' image paths are relative to."})
    max_length: int = field(default=2048, metadata={"help": "Longest sample in tokens (whole turns are dropped)."})
    strict_data: bool = field(default=False, metadata={"help": "Stop at the first bad record instead of skipping it."})
    check_images: bool = field(default=True, metadata={"help": "Open every image once before training."})
    group_batches: int = field(default=64, metadata={"help": "Global batches per length-sorted group."})
    task_fractions: str = field(
        default="",
        metadata={
            "help": "Share of each task's training records kept, e.g. 'GC:0.25,MII:0.25' (a draw per record "
            "seeded by --seed); tasks not listed are kept whole. Empty (the paper's recipe): every record."
        },
    )
    digit_loss_start_step: int = field(
        default=0,
        metadata={
            "help": "Curriculum: before this optimizer step, positions whose target is a digit token "
            "('0'..'9', the box coordinates) carry no loss, so answer formats, names and copying the "
            "asked phrase are learned first. 0 (the paper's recipe): every answer token from the start."
        },
    )


def parse_task_fractions(text: str) -> Dict[str, float]:
    """``"GC:0.25,MII:0.25"`` -> ``{"GC": 0.25, "MII": 0.25}``, each task a Med-GRIT task, each share in [0, 1]."""
    shares = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        task, sep, value = item.partition(":")
        task = check_task(task.strip(), "task_fractions", allowed=TASKS)
        try:
            share = float(value) if sep else None
        except ValueError:
            share = None
        if share is None or not 0.0 <= share <= 1.0:
            raise ValueError(f"task_fractions: {item!r} is not TASK:SHARE with a share in [0, 1] (e.g. 'GC:0.25')")
        shares[task] = share
    return shares


def sample_tasks(records: List[dict], shares: Dict[str, float], seed: int) -> List[dict]:
    """The records kept under ``shares``: one seeded draw per record (whatever its task), so the same
    file, shares and seed keep the same records; tasks without a share are kept whole."""
    rng = random.Random(seed)
    return [rec for rec in records if rng.random() < shares.get(rec.get("task"), 1.0)]


def digit_token_ids(tokenizer) -> List[int]:
    """The ids of the ten one-digit tokens (Qwen's tokenizer writes every number digit by digit)."""
    ids = []
    for digit in "0123456789":
        encoded = tokenizer(digit, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise ValueError(f"the tokenizer writes the digit {digit!r} as {encoded}, not one token")
        ids.append(encoded[0])
    return ids


class DigitCurriculum(TrainerCallback):
    """Leaves the digit tokens out of the loss for the first ``start_step`` optimizer steps (set
    again at every step from the trainer's own step count, so a resumed run is in the right phase)."""

    def __init__(self, model, digit_ids: List[int], start_step: int):
        self.model = getattr(model, "model", model)  # a LoRAModel wraps the causal LM
        self.ids = tuple(digit_ids)
        self.start_step = start_step

    def _apply(self, state):
        ignoring = state.global_step < self.start_step
        if not ignoring and self.model.loss_ignored_ids is not None:
            logger.info(f"digit curriculum: box digits enter the loss at step {state.global_step}")
        self.model.loss_ignored_ids = self.ids if ignoring else None

    def on_train_begin(self, args, state, control, **kwargs):
        self._apply(state)

    def on_step_begin(self, args, state, control, **kwargs):
        self._apply(state)


class BiRDTrainer(Trainer):
    """PaddleNLP ``Trainer`` with length-grouped batches, a padding-fraction log and, on one float32
    CPU process when ``cpu_adamw``, :class:`CpuAdamW` as its optimizer."""

    def __init__(self, *args, group_batches: int = 64, cpu_adamw: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.group_batches = group_batches
        self.cpu_adamw = cpu_adamw
        self._tokens = [0, 0]  # real, computed (since the last log)

    def create_optimizer(self, lr_scheduler=None):
        """PaddleNLP's AdamW, turned into :class:`CpuAdamW` when asked for and the run is one float32
        CPU process (data-parallel ranks keep Paddle's optimizer: their gradients live in fused
        buffers; fp16 / bf16 runs too: PaddleNLP gives them master weights)."""
        args = self.args
        built_here = self.optimizer is None
        optimizer = super().create_optimizer(lr_scheduler)
        if (
            built_here
            and self.cpu_adamw
            and args.world_size == 1
            and not (args.fp16 or args.bf16)
            and paddle.get_device() == "cpu"
            and type(optimizer) is paddle.optimizer.AdamW
        ):
            CpuAdamW.adopt(optimizer)
            # CpuAdamW takes sparse (SelectedRows) gradients: a trainable embedding then hands back a
            # row per id occurrence instead of a zero-filled 151,936-row matrix (a demo batch's
            # embedding backward 26.4 vs 0.13 ms: benchmarks/bench_lm_head.py embedding, one thread).
            sparse = []
            for name, layer in self.model.named_sublayers():
                if isinstance(layer, paddle.nn.Embedding) and not layer.weight.stop_gradient:
                    layer._sparse = True
                    sparse.append(name)
            # The LM head's update runs in the background while the next batch goes through the
            # decoder (the model's forward waits for it before the head reads its weight).
            deferred = getattr(self.model, "deferrable_parameters", lambda: [])()
            optimizer.defer(deferred)
            logger.info(
                f"optimizer: CpuAdamW (AdamW's update in Numba on this CPU process); sparse gradients: {sparse}; "
                f"deferred updates: {[p.name for p in deferred]}"
            )
        return optimizer

    def _finish_updates(self):
        if isinstance(self.optimizer, CpuAdamW):
            self.optimizer.finish_updates()

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            self._finish_updates()

    def _save(self, *args, **kwargs):
        self._finish_updates()  # the saved head must hold its last update
        return super()._save(*args, **kwargs)

    def get_train_dataloader(self):
        sampler = LengthGroupedBatchSampler(
            self.train_dataset.lengths,
            batch_size=self.args.per_device_train_batch_size,
            num_replicas=max(1, self.args.dataset_world_size),
            rank=max(0, self.args.dataset_rank),
            seed=self.args.seed,
            drop_last=self.args.dataloader_drop_last,
            group_batches=self.group_batches,
        )
        return paddle.io.DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
        )

    def compute_loss(self, model, inputs, return_outputs=False):
        mask = inputs["attention_mask"]
        self._tokens[0] += int(mask.sum())
        self._tokens[1] += int(mask.numel())
        return super().compute_loss(model, inputs, return_outputs)

    def log(self, logs, **kwargs):
        # Step logs ("loss") are written on every rank at the same step, so the token counts can be
        # summed over ranks there: the fraction describes the whole global batch, not rank 0's share.
        if "loss" in logs:
            tokens = paddle.to_tensor(self._tokens, dtype="int64")
            real, computed = (int(v) for v in self._nested_gather(tokens).reshape([-1, 2]).sum(axis=0))
            if computed:
                logs["padding_fraction"] = round(1.0 - real / computed, 4)
            self._tokens = [0, 0]
        super().log(logs, **kwargs)


def freeze_vision(model, train_resampler: bool = True) -> List[str]:
    """Freeze the vision tower as Qwen-VL's fine-tuning recipe (``fix_vit``) does: every vision
    parameter is frozen, then the whole resampler (``attn_pool``) is made trainable again if
    ``train_resampler``. Upstream re-enables the module as a whole, which includes its sin-cos
    ``pos_embed`` table, so it trains too; ``ln_post`` and ``proj`` sit outside ``attn_pool`` and
    stay frozen. Returns the names of the vision parameters left trainable."""
    trainable = []
    for name, param in model.transformer.visual.named_parameters():
        train = train_resampler and name.startswith("attn_pool.")
        param.stop_gradient = not train
        if train:
            trainable.append(name)
    return trainable


def effective_resampler_init(model_args: ModelArguments) -> str:
    """``resampler_init`` as this run uses it: it initialises a ``model_preset``, so a run from a
    checkpoint (e.g. the demo's config with ``--model_preset "" --model_name_or_path DIR``) keeps the
    checkpoint's weights and says so in a warning instead of failing on the config's setting."""
    if model_args.model_name_or_path and model_args.resampler_init != "random":
        check_resampler_init(model_args.resampler_init)
        logger.warning(
            f"resampler_init {model_args.resampler_init!r} initialises a model_preset; the checkpoint "
            f"{model_args.model_name_or_path} keeps its own weights"
        )
        return "random"
    return model_args.resampler_init


def build_training_model(model_args: ModelArguments, training_args: TrainingArguments):
    """The model this run trains: the preset or checkpoint of ``model_args`` (built in the one
    library home, :func:`paddlemix.models.qwen_vl.builder.build_model`), with the vision tower frozen
    and LoRA adapters added as the arguments ask."""
    dtype = "bfloat16" if training_args.bf16 else ("float16" if training_args.fp16 else "float32")
    model = build_model(
        preset=model_args.model_preset,
        checkpoint=model_args.model_name_or_path,
        seed=training_args.seed,
        resampler_init=effective_resampler_init(model_args),
        dtype=dtype,
    )
    if model_args.freeze_vision:
        freeze_vision(model, train_resampler=model_args.train_resampler)
    if model_args.lora:
        from paddlenlp.peft import LoRAConfig, LoRAModel

        # merge_lora reads the base model from the config; a preset's base is recorded by save_lora_base.
        base = os.path.abspath(model_args.model_name_or_path) if model_args.model_name_or_path else None
        lora_config = LoRAConfig(
            base_model_name_or_path=base,
            target_modules=LORA_TARGETS,
            r=model_args.lora_rank,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
            dtype=dtype,
        )
        model = LoRAModel(model, lora_config)
        model.mark_only_lora_as_trainable()
    if model_args.image_feature_cache_mb > 0:
        transformer = (model.model if model_args.lora else model).transformer
        trainable = FrozenFeatureCache.trainable_parameters(transformer.visual)
        if trainable:
            # A config that sets the cache (the demo's) stays usable with --train_resampler true.
            logger.warning(
                f"image_feature_cache_mb is off for this run: the vision tower trains ({trainable[0]} and "
                f"{len(trainable) - 1} more), so its features change every step"
            )
        else:
            transformer.image_feature_cache = FrozenFeatureCache(int(model_args.image_feature_cache_mb * 2**20))
    return model


def save_lora_base(model, output_dir: str, should_save: bool = True) -> str:
    """Write the frozen base weights of a LoRA model built from a preset (random init) to
    ``<output_dir>/base_model`` and record that path in its LoRA config: the adapters saved by
    training are useless for merging without the exact weights they were trained against."""
    base_dir = os.path.abspath(os.path.join(output_dir, "base_model"))
    if should_save and not os.path.isfile(os.path.join(base_dir, "config.json")):
        base = model.model
        base_state = {k: v for k, v in base.state_dict().items() if ".lora_" not in k}
        base.save_pretrained(base_dir, state_dict=base_state)
        logger.info(f"saved the preset's base weights for merging LoRA adapters to {base_dir}")
    model.lora_config.base_model_name_or_path = base_dir
    return base_dir


def count_parameters(model) -> str:
    total = sum(int(p.numel()) for p in model.parameters())
    trainable = sum(int(p.numel()) for p in model.parameters() if not p.stop_gradient)
    return f"{trainable:,} trainable of {total:,} parameters"


def config_arguments(path: str) -> list:
    """The ``--key value`` pairs of a JSON config, as PaddleNLP's ``read_json`` makes them, without
    the keys that start with ``_``: notes for the reader (e.g. where the demo departs from the paper)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config {path} not found")
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    pairs = []
    for key, value in config.items():
        if not key.startswith("_"):
            pairs.extend([f"--{key}", *map(str, value)] if isinstance(value, list) else [f"--{key}", str(value)])
    return pairs


def parse_arguments(argv=None):
    """``(ModelArguments, DataArguments, TrainingArguments)`` from ``[CONFIG.json] [--key value ...]``
    (``sys.argv[1:]`` by default); pairs after the JSON file override its values."""
    parser = PdArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0].endswith(".json"):
        # The JSON file first, then command-line overrides: argparse keeps the last value.
        argv = config_arguments(argv[0]) + argv[1:]
    return parser.parse_args_into_dataclasses(args=argv)


def load_training_data(
    model_args: ModelArguments, data_args: DataArguments, config, show_progress: bool = True, seed: int = 0
):
    """Read, check and encode the training records — before any weights are loaded, so a wrong
    ``train_json``, ``image_root`` or ``max_length`` costs seconds, not a model load per rank."""
    if not data_args.train_json or not data_args.image_root:
        raise ValueError("train_json and image_root are required (in the config or as --train_json/--image_root)")
    if not os.path.isdir(data_args.image_root):
        raise FileNotFoundError(f"image_root {data_args.image_root} is not a folder")
    records, report = load_medgrit(
        [p for p in data_args.train_json.split(",") if p],
        data_args.image_root,
        strict=data_args.strict_data,
        check_images=data_args.check_images,
    )
    logger.info(report.format())
    if not records:
        raise ValueError(f"no usable training records in {data_args.train_json} ({report.read} read, all skipped)")
    shares = parse_task_fractions(data_args.task_fractions)
    if shares:
        before = Counter(rec.get("task") for rec in records)
        records = sample_tasks(records, shares, seed)
        after = Counter(rec.get("task") for rec in records)
        logger.info("task_fractions kept " + ", ".join(f"{t} {after[t]}/{before[t]}" for t in sorted(before)))
        if not records:
            raise ValueError(f"task_fractions {data_args.task_fractions!r} kept none of the training records")
    tokenizer = load_tokenizer(model_args.model_name_or_path, config.image_span)
    from paddlemix.processors.image_processing import QWenVLImageProcessor

    image_processor = QWenVLImageProcessor.from_config(config)
    dataset = SFTDataset(records, tokenizer, image_processor, data_args.max_length, show_progress=show_progress)
    logger.info(f"training data: {dataset.summary()}")
    for reason, entries in dataset.skipped.items():
        for entry in entries[:MAX_LOGGED_SKIPS]:
            logger.warning(f"skipped ({reason}): {entry}")
        if len(entries) > MAX_LOGGED_SKIPS:
            logger.warning(f"skipped ({reason}): ... and {len(entries) - MAX_LOGGED_SKIPS} more")
    if not len(dataset):
        raise ValueError(
            f"none of the {len(records)} records of {data_args.train_json} fits max_length={data_args.max_length} "
            f"tokens with its first turn (e.g. {dataset.skipped['too_long'][0]}); raise max_length"
        )
    return dataset, tokenizer


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a complete checkpoint, or None. PaddleNLP's Trainer writes the weights,
    optimizer and scheduler, then ``trainer_state.json``, then the RNG state last, so a save killed
    midway lacks one of the last two or leaves it cut short."""
    try:
        with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as f:
            json.load(f)
    except FileNotFoundError:
        return "no trainer_state.json"
    except ValueError:
        return "trainer_state.json is cut short"
    rng_files = sorted(glob.glob(os.path.join(path, "rng_state*.pth")))
    if not rng_files:
        return "no rng_state.pth (the last file a save writes)"
    for rng_file in rng_files:
        try:
            paddle.load(rng_file, return_numpy=True)
        except Exception as exc:  # a truncated pickle raises EOFError, UnpicklingError, ValueError...
            return f"{os.path.basename(rng_file)} cannot be read ({type(exc).__name__})"
    return None


def last_complete_checkpoint(output_dir: str) -> Optional[str]:
    """The newest ``checkpoint-N`` of ``output_dir`` that a save finished; newer ones are logged and skipped."""
    steps = {}
    for name in os.listdir(output_dir):
        m = re.fullmatch(r"checkpoint-(\d+)", name)
        if m and os.path.isdir(os.path.join(output_dir, name)):
            steps[int(m.group(1))] = os.path.join(output_dir, name)
    for step in sorted(steps, reverse=True):
        problem = checkpoint_problem(steps[step])
        if problem is None:
            return steps[step]
        logger.warning(f"skipping {steps[step]}: its save did not finish ({problem})")
    return None


def main(argv=None):
    """Train; returns the ``Trainer`` (its ``model`` and ``state.log_history``) once the final model is saved."""
    model_args, data_args, training_args = parse_arguments(argv)
    training_args.remove_unused_columns = False  # `images` is not a forward() argument PaddleNLP knows
    training_args.print_config(model_args, "Model")
    training_args.print_config(data_args, "Data")

    resume = training_args.resume_from_checkpoint
    if resume is not None:
        problem = checkpoint_problem(resume)
        if problem is not None:
            raise ValueError(f"resume_from_checkpoint {resume} is not a complete checkpoint: {problem}")
    elif os.path.isdir(training_args.output_dir) and not training_args.overwrite_output_dir:
        resume = last_complete_checkpoint(training_args.output_dir)
        if resume is not None:
            logger.info(f"resuming from the latest complete checkpoint in output_dir: {resume}")

    paddle.set_device(training_args.device if training_args.device else "cpu")
    # A wrong model source fails here, before the data is read.
    model_args.resampler_init = effective_resampler_init(model_args)  # warns once for a checkpoint
    check_source(model_args.model_preset, model_args.model_name_or_path, model_args.resampler_init)
    config = load_config(model_args.model_preset, model_args.model_name_or_path)
    dataset, tokenizer = load_training_data(
        model_args, data_args, config, show_progress=training_args.local_rank <= 0, seed=training_args.seed
    )
    model = build_training_model(model_args, training_args)
    if model_args.lora and model_args.model_preset:
        save_lora_base(model, training_args.output_dir, training_args.should_save)
    logger.info(count_parameters(model))

    trainer = BiRDTrainer(
        group_batches=data_args.group_batches,
        cpu_adamw=model_args.cpu_adamw,
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=SFTCollator(tokenizer.pad_token_id),
        tokenizer=tokenizer,
    )
    if data_args.digit_loss_start_step > 0:
        trainer.add_callback(DigitCurriculum(model, digit_token_ids(tokenizer), data_args.digit_loss_start_step))
    result = trainer.train(resume_from_checkpoint=resume)
    cache = (model.model if model_args.lora else model).transformer.image_feature_cache
    if cache is not None:
        logger.info(
            f"image feature cache: {cache.hits} images reused, {cache.misses} computed, "
            f"{cache.held_bytes / 2**20:.1f} of {cache.max_bytes / 2**20:.0f} MB held"
        )
    trainer.save_model()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    return trainer


if __name__ == "__main__":
    from paddlemix.cli import run  # noqa: E402

    sys.exit(run(main))
