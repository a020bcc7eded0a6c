"""labkit.llamafactory and `labkit export llamafactory`: the YAML holds LlamaFactory's keys only, every
SFTConfig field is decided, the data reads back as the same examples, and the command's errors name
the file, the line and the field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tiny_models import tiny_chat_model, tiny_tokenizer
from transformers import LlamaConfig

from labkit import hardware
from labkit.commands import export as export_command
from labkit.llamafactory import (
    FIELDS,
    FIXED,
    KIT_ONLY,
    export_llamafactory,
    llamafactory_settings,
    read_examples,
    unknown_fields,
)
from labkit.train import SFTConfig, train_sft
from labkit.worker import Sample, load_samples

# Every key LlamaFactory 0.9.5 accepts in a training YAML (it refuses any other: "Some specified
# arguments are not used by the HfArgumentParser"). Made once, in LlamaFactory 0.9.5's own venv
# (transformers 5.6.0; ../shared/peer/setup_lf_venv.sh), since the kit's venv cannot import it:
#   from llamafactory.hparams.parser import _TRAIN_ARGS
#   sorted({f.name for c in _TRAIN_ARGS for f in dataclasses.fields(c) if f.init})
LLAMAFACTORY_KEYS = frozenset("""
accelerator_config adam_beta1 adam_beta2 adam_epsilon adapter_folder adapter_name_or_path
add_special_tokens add_tokens additional_target apollo_layerwise apollo_proj apollo_proj_type
apollo_rank apollo_scale apollo_scale_front apollo_scale_type apollo_target apollo_update_interval
asft_alpha audio_sampling_rate auto_find_batch_size average_tokens_across_devices badam_mask_mode
badam_mode badam_start_block badam_switch_interval badam_switch_mode badam_update_ratio badam_verbose
batch_eval_metrics bf16 bf16_full_eval buffer_size cache_dir compute_accuracy create_new_adapter
crop_to_patches cutoff_len data_seed data_shared_file_system dataloader_drop_last dataloader_num_workers
dataloader_persistent_workers dataloader_pin_memory dataloader_prefetch_factor dataset dataset_dir
ddp_backend ddp_broadcast_buffers ddp_bucket_cap_mb ddp_find_unused_parameters ddp_static_graph
ddp_timeout debug deepspeed default_system disable_gradient_checkpointing disable_shuffling disable_tqdm
do_eval do_predict do_sample do_train double_quantization dpo_label_smoothing eaft_alpha
early_stopping_steps enable_jit_checkpoint enable_liger_kernel enable_thinking enable_torch_profiler
eval_accumulation_steps eval_dataset eval_delay eval_do_concat_batches eval_num_beams
eval_on_each_dataset eval_on_start eval_steps eval_strategy eval_use_gather_object export_device
export_dir export_hub_model_id export_legacy_format export_quantization_bit export_quantization_dataset
export_quantization_maxlen export_quantization_nsamples export_size finetuning_type flash_attn fp16
fp16_full_eval fp8 fp8_backend fp8_enable_fsdp_float8_all_gather freeze_extra_modules
freeze_language_model freeze_multi_modal_projector freeze_trainable_layers freeze_trainable_modules
freeze_vision_tower fsdp fsdp_config full_determinism galore_layerwise galore_proj_type galore_rank
galore_scale galore_target galore_update_interval generation_config generation_max_length
generation_num_beams gradient_accumulation_steps gradient_checkpointing gradient_checkpointing_kwargs
greater_is_better hf_hub_token hub_always_push hub_model_id hub_private_repo hub_revision hub_strategy
hub_token hyper_parallel_args ignore_data_skip ignore_pad_token_for_loss image_do_pan_and_scan
image_max_pixels image_min_pixels include_effective_tokens_per_second include_for_metrics
include_num_input_tokens_seen infer_backend infer_dtype init_special_tokens interleave_probs
kt_expert_checkpoint_path kt_lora_expert_intermediate_size kt_lora_expert_num kt_use_lora_experts
kt_weight_path kto_chosen_weight kto_rejected_weight label_names label_smoothing_factor ld_alpha
learning_rate length_column_name length_penalty liger_kernel_config load_best_model_at_end local_rank
log_level log_level_replica log_on_each_node logging_dir logging_first_step logging_nan_inf_filter
logging_steps logging_strategy lora_alpha lora_dropout lora_rank lora_target loraplus_lr_embedding
loraplus_lr_ratio low_cpu_mem_usage lr_scheduler_kwargs lr_scheduler_type mask_history master_addr
master_port max_grad_norm max_length max_new_tokens max_samples max_steps media_dir
metric_for_best_model mix_strategy mixture_of_depths model_name_or_path model_revision module_dropout
moe_aux_loss_coef ms_hub_token neat_packing neftune_noise_alpha new_special_tokens_config num_beams
num_train_epochs offload_folder oft_block_size oft_rank oft_target om_hub_token optim optim_args
optim_target_modules output_dir overwrite_cache overwrite_output_dir packing parallelism_config
per_device_eval_batch_size per_device_train_batch_size pissa_convert pissa_init pissa_iter plot_loss
ppo_buffer_size ppo_epochs ppo_score_norm ppo_target ppo_whiten_rewards predict_with_generate
prediction_loss_only pref_bco_weight pref_beta pref_ftx pref_loss preprocessing_batch_size
preprocessing_num_workers preserve_thinking print_param_status profile_modules profiler_active_steps
profiler_output_dir profiler_profile_memory profiler_record_shapes profiler_repeat profiler_wait_steps
profiler_warmup_steps profiler_with_stack project pure_bf16 push_to_hub quantization_bit
quantization_device_map quantization_method quantization_type ray_init_kwargs ray_num_workers ref_model
ref_model_adapters ref_model_quantization_bit remove_unused_columns repetition_penalty report_to
resize_vocab restore_callback_states_from_checkpoint resume_from_checkpoint reward_model
reward_model_adapters reward_model_quantization_bit reward_model_type rope_scaling run_name
save_on_each_node save_only_model save_steps save_strategy save_total_limit seed sglang_config
sglang_lora_backend sglang_maxlen sglang_mem_fraction sglang_tp_size shift_attn simpo_gamma
skip_memory_metrics skip_special_tokens sortish_sampler split_special_tokens stage streaming
swanlab_api_key swanlab_lark_secret swanlab_lark_webhook_url swanlab_logdir swanlab_mode swanlab_project
swanlab_run_name swanlab_workspace temperature template tf32 tokenized_path tool_format top_k top_p
torch_compile torch_compile_backend torch_compile_mode torch_empty_cache_steps trackio_bucket_id
trackio_space_id trackio_static_space_id train_from_scratch train_on_prompt train_sampling_strategy
trust_remote_code upcast_layernorm upcast_lmhead_output use_adam_mini use_apollo use_asft_loss
use_audio_in_video use_badam use_cache use_cpu use_dft_loss use_dora use_eaft_loss use_fast_tokenizer
use_galore use_hyper_parallel use_kt use_kv_cache use_liger_kernel use_llama_pro use_mca use_muon
use_reentrant_gc use_rslora use_swanlab use_unsloth use_unsloth_gc use_v1_kernels val_size video_fps
video_max_pixels video_maxlen video_min_pixels vllm_config vllm_enforce_eager vllm_gpu_util
vllm_max_lora_rank vllm_maxlen warmup_ratio warmup_steps weight_decay
""".split())

HUB_MODEL = "someone/some-model"  # not a local folder: no tokenizer is read
PAIRS = [("Is 2 even?", "Yes"), ("Is 3 even?", "No"), {"prompt": "Name a prime.", "answer": "7"}]

# One config per method, with its switches away from their defaults.
CASES: dict[str, dict[str, Any]] = {
    "lora": {},
    "lora variants": {"lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.1, "lora_target": "q_proj,v_proj",
                      "use_rslora": True, "use_dora": True, "loraplus_lr_ratio": 16.0},
    "pissa": {"pissa_init": True, "pissa_iter": 4},
    "qlora": {"quantization_bit": 4, "quantization_type": "fp4", "double_quantization": False},
    "freeze": {"finetuning_type": "freeze", "freeze_trainable_layers": -1,
               "freeze_trainable_modules": "mlp,self_attn", "freeze_extra_modules": "embed_tokens"},
    "full + galore": {"finetuning_type": "full", "use_galore": True, "galore_target": "mlp",
                      "galore_rank": 8, "galore_update_interval": 50, "galore_scale": 0.25},
    "training": {"bf16": True, "gradient_checkpointing": True, "warmup_ratio": 0.25, "max_steps": 12,
                 "save_steps": 4, "save_total_limit": 3, "progress": False, "group_by_length": False,
                 "system": "Be brief.", "lr_scheduler_type": "cosine", "weight_decay": 0.01,
                 "max_grad_norm": 0.5, "seed": 7, "logging_steps": 2},
}


def _settings(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    return llamafactory_settings(SFTConfig(**changes), 100, HUB_MODEL, tmp_path)[0]


@pytest.mark.parametrize("changes", CASES.values(), ids=list(CASES))
def test_every_key_written_is_one_llamafactory_accepts(tmp_path: Path, changes: dict[str, Any]) -> None:
    settings = _settings(tmp_path, **changes)
    assert set(settings) <= LLAMAFACTORY_KEYS, set(settings) - LLAMAFACTORY_KEYS
    # a switch set away from its default reaches the file under its own name (LlamaFactory knows
    # these three too, but transformers 5.24 has no warmup_ratio, 0.9.5 refuses group_by_length,
    # and LlamaFactory's own switch for gradient checkpointing is disable_gradient_checkpointing)
    renamed = ("warmup_ratio", "group_by_length", "gradient_checkpointing")
    for name, value in changes.items():
        if name in LLAMAFACTORY_KEYS and name not in renamed:
            assert settings[name] == value, name


def test_every_sftconfig_field_is_written_or_named_kit_only() -> None:
    fields = {f.name for f in dataclasses.fields(SFTConfig)}
    assert unknown_fields() == []
    decided = set(FIELDS) | set(KIT_ONLY)
    assert decided == fields, f"stale entries: {decided - fields}"
    assert not set(FIELDS) & set(KIT_ONLY)


def test_a_new_field_the_exporter_does_not_know_is_refused(tmp_path: Path) -> None:
    @dataclasses.dataclass
    class Grown(SFTConfig):
        neftune_noise: float = 0.0

    with pytest.raises(ValueError, match=r"\['neftune_noise'\].*FIELDS.*KIT_ONLY"):
        llamafactory_settings(Grown(), 10, HUB_MODEL, tmp_path)


def test_the_default_config_as_llamafactory_reads_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    precision = hardware.trainer_precision()
    assert settings == {
        "model_name_or_path": HUB_MODEL, **FIXED, "dataset": "kit_sft",
        "dataset_dir": str((tmp_path / "data").resolve()),
        "output_dir": str((tmp_path / "saves").resolve()),
        "finetuning_type": "lora", "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.0,
        "lora_target": "all", "use_rslora": False, "use_dora": False, "pissa_init": False,
        "bf16": precision["bf16"], "fp16": precision["fp16"],
        "disable_gradient_checkpointing": True,  # LlamaFactory's default is on; the kit's off
        "learning_rate": 1e-4, "num_train_epochs": 1.0, "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1, "cutoff_len": 256, "warmup_steps": 0,
        "lr_scheduler_type": "linear", "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": 42,
        "train_sampling_strategy": "group_by_length",  # LlamaFactory 0.9.5 refuses group_by_length
        "train_on_prompt": False, "mask_history": False,
        "save_strategy": "no", "logging_steps": 10,
    }


def test_renamed_fields_carry_the_kits_meaning(tmp_path: Path) -> None:
    settings = _settings(tmp_path, **CASES["training"], output_dir=tmp_path / "run")
    assert settings["warmup_steps"] == 3  # int(0.25 * 12 steps), as train_sft rounds it
    assert settings["disable_gradient_checkpointing"] is False
    assert (settings["bf16"], settings["fp16"]) == (True, False)
    assert settings["disable_tqdm"] is True
    assert (settings["save_steps"], settings["save_total_limit"]) == (4, 3)
    assert "train_sampling_strategy" not in settings and "save_strategy" not in settings
    # beside the kit's checkpoint-N folders, which LlamaFactory would try to resume from
    assert settings["output_dir"] == str((tmp_path / "run" / "llamafactory").resolve())
    assert {"warmup_ratio", "group_by_length", "system", "progress", "fast_loss"}.isdisjoint(settings)


def test_switches_of_a_method_not_in_use_are_left_out(tmp_path: Path) -> None:
    freeze = _settings(tmp_path, **CASES["freeze"])
    assert not any(k.startswith(("lora_", "pissa_", "galore_", "quantization_")) for k in freeze)
    lora = _settings(tmp_path)
    assert not any(k.startswith(("freeze_", "galore_", "quantization_")) for k in lora)
    assert "loraplus_lr_ratio" not in lora and "pissa_iter" not in lora
    assert _settings(tmp_path, **CASES["qlora"])["quantization_method"] == "bnb"


def test_total_steps_is_the_count_train_sft_runs() -> None:
    model, tokenizer = tiny_chat_model()
    config = SFTConfig(per_device_train_batch_size=4, gradient_accumulation_steps=2, num_train_epochs=1.5,
                       progress=False, lora_rank=2)
    examples = [(f"Is {i} even?", "Yes" if i % 2 == 0 else "No") for i in range(10)]
    assert train_sft(model, tokenizer, examples, config).steps == config.total_steps(10) == 3


def test_a_prepared_model_cannot_be_exported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="finetuning_type=None.*set finetuning_type"):
        _settings(tmp_path, finetuning_type=None)


def _alpaca_pairs(job_data: Path) -> list[tuple[str, str]]:
    """The user turn and the answer as LlamaFactory's alpaca converter builds them."""
    rows = json.loads(job_data.read_text(encoding="utf-8"))
    return [("\n".join(x for x in (r["instruction"], r["input"]) if x), r["output"]) for r in rows]


def test_the_data_reads_back_as_the_same_examples(tmp_path: Path) -> None:
    job = export_llamafactory(SFTConfig(system="Be brief."), PAIRS, HUB_MODEL, tmp_path)
    assert job.paths == (tmp_path / "kit_sft.yaml", tmp_path / "data" / "dataset_info.json",
                         tmp_path / "data" / "kit_sft.json")
    assert _alpaca_pairs(job.data) == [("Is 2 even?", "Yes"), ("Is 3 even?", "No"), ("Name a prime.", "7")]
    rows = json.loads(job.data.read_text(encoding="utf-8"))
    assert {r["system"] for r in rows} == {"Be brief."}
    entry = json.loads(job.dataset_info.read_text(encoding="utf-8"))["kit_sft"]
    assert entry == {"file_name": "kit_sft.json", "formatting": "alpaca",
                     "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                 "history": "history", "system": "system"}}
    settings = yaml.safe_load(job.yaml.read_text(encoding="utf-8"))
    assert settings == llamafactory_settings(SFTConfig(system="Be brief."), 3, HUB_MODEL, tmp_path)[0]
    assert (Path(settings["dataset_dir"]) / entry["file_name"]).resolve() == job.data.resolve()
    assert job.command == f"llamafactory-cli train {job.yaml}"


def test_a_conversation_exports_with_its_history_and_reads_back_through_the_registry(tmp_path: Path) -> None:
    talk = Sample("And 4?", history=(("Is 2 even?", "Yes"), ("Is 3 even?", "No")), system="Be brief.",
                  response="Yes")
    job = export_llamafactory(SFTConfig(), [talk, ("Name a prime.", "7")], HUB_MODEL, tmp_path)
    samples, report = load_samples("kit_sft", job.dataset_info.parent)
    assert [(s.system, s.history, s.prompt, s.response) for s in samples] == [
        ("Be brief.", talk.history, "And 4?", "Yes"), (None, (), "Name a prime.", "7")]
    assert report.read == 2 and not report.rejected


def test_the_header_names_the_kit_only_fields_and_the_renamings(tmp_path: Path) -> None:
    job = export_llamafactory(SFTConfig(warmup_ratio=0.1), PAIRS * 30, HUB_MODEL, tmp_path)
    header = [line for line in job.yaml.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    text = "\n".join(header)
    assert all(f"{name}=" in text for name in KIT_ONLY)
    assert "warmup_ratio 0.1 -> warmup_steps: 1 (of the kit's 12 steps" in text
    assert "group_by_length true -> train_sampling_strategy: group_by_length" in text


def test_a_second_export_keeps_the_other_datasets(tmp_path: Path) -> None:
    export_llamafactory(SFTConfig(), PAIRS, HUB_MODEL, tmp_path, dataset_name="first")
    job = export_llamafactory(SFTConfig(), PAIRS[:1], HUB_MODEL, tmp_path, dataset_name="second")
    entries = json.loads(job.dataset_info.read_text(encoding="utf-8"))
    assert set(entries) == {"first", "second"} and "system" not in entries["second"]["columns"]
    assert _alpaca_pairs(tmp_path / "data" / "first.json")[0] == PAIRS[0]


@pytest.mark.parametrize(("examples", "name", "message"), [
    ([{"prompt": "p", "answer": "Yes", "weight": 0.7}], "kit_sft", r"example 0: weight 0\.7.*no per-example"),
    ([("p", 3)], "kit_sft", "example 0: prompt and answer must be strings"),
    ([], "kit_sft", "no examples"),
    (PAIRS, "../escape", "dataset_name='../escape'"),
])
def test_examples_and_names_it_cannot_write_are_refused(tmp_path: Path, examples: list[Any], name: str,
                                                         message: str) -> None:
    with pytest.raises(ValueError, match=message):
        export_llamafactory(SFTConfig(), examples, HUB_MODEL, tmp_path, dataset_name=name)
    assert not (tmp_path / "kit_sft.yaml").exists()


def _model_folder(path: Path, chat_template: bool = True) -> Path:
    tokenizer = tiny_tokenizer()
    if not chat_template:
        tokenizer.chat_template = None
    tokenizer.save_pretrained(path)
    LlamaConfig(vocab_size=len(tokenizer), hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                num_attention_heads=1).save_pretrained(path)
    return path


def test_a_model_without_a_chat_template_needs_a_named_template(tmp_path: Path) -> None:
    model = _model_folder(tmp_path / "model", chat_template=False)
    with pytest.raises(ValueError, match="no chat template.*template='chatml'"):
        export_llamafactory(SFTConfig(), PAIRS, model, tmp_path / "out")
    job = export_llamafactory(SFTConfig(), PAIRS, model, tmp_path / "out", template="chatml")
    assert yaml.safe_load(job.yaml.read_text(encoding="utf-8"))["template"] == "chatml"


def test_examples_longer_than_cutoff_len_are_named(tmp_path: Path) -> None:
    model = _model_folder(tmp_path / "model")
    pairs = [("is the patient sick ?", "yes"), ("is the patient old ? " * 5, "no")]
    text = export_llamafactory(SFTConfig(cutoff_len=16), pairs, model, tmp_path / "out").yaml.read_text()
    assert "1 of 2 examples are longer than cutoff_len 16" in text
    assert "template" not in yaml.safe_load(text)  # LlamaFactory parses the tokenizer's own
    assert yaml.safe_load(text)["model_name_or_path"] == str(model.resolve())
    quiet = export_llamafactory(SFTConfig(cutoff_len=64), pairs, model, tmp_path / "out").yaml.read_text()
    assert "longer than cutoff_len" not in quiet


def test_a_missing_model_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        export_llamafactory(SFTConfig(), PAIRS, tmp_path / "nowhere", tmp_path / "out")


# --- labkit export llamafactory ------------------------------------------------------------------


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_command_writes_the_job_with_flags_over_the_config_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _jsonl(tmp_path / "pairs.jsonl", [json.dumps({"prompt": p, "answer": a}) for p, a in PAIRS[:2]])
    kit = tmp_path / "kit.yaml"
    kit.write_text("lora_rank: 4\nlearning_rate: 3.0e-4\n", encoding="utf-8")
    code = export_command.main(["llamafactory", "--config", str(kit), "--data", str(data),
                                "--model", HUB_MODEL, "--out", str(tmp_path / "out"),
                                "--learning_rate", "2e-4"])
    assert code == 0
    settings = yaml.safe_load((tmp_path / "out" / "kit_sft.yaml").read_text(encoding="utf-8"))
    assert (settings["lora_rank"], settings["learning_rate"]) == (4, 2e-4)
    assert "llamafactory-cli train" in capsys.readouterr().out


@pytest.mark.parametrize(("lines", "message"), [
    (['{"prompt": "a", "answer": "b"}', "", "{not json"], "line 3: not JSON"),
    (['{"prompt": "a"}'], "line 1: field 'answer' is missing"),
    (['{"prompt": "a", "answer": 3}'], "line 1: field 'answer' must be a string, got int"),
    (['["a", "b"]'], "line 1: expected an object"),
    (['{"prompt": " ", "answer": "b"}'], "line 1: the prompt is empty"),
    (['{"prompt": "a", "answer": "b", "weight": 0.5}'], "weight 0.5"),
    ([""], "no examples"),
])
def test_a_bad_data_file_is_named_with_its_line_and_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str) -> None:
    data = _jsonl(tmp_path / "pairs.jsonl", lines)
    code = export_command.main(["llamafactory", "--data", str(data), "--model", HUB_MODEL,
                                "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and (str(data) in err or "example 0" in err)


def test_the_command_names_a_missing_file_and_a_bad_setting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["llamafactory", "--model", HUB_MODEL, "--out", str(tmp_path / "out")]
    assert export_command.main([*args, "--data", str(tmp_path / "none.jsonl")]) == 2
    assert "none.jsonl: no such data file" in capsys.readouterr().err
    data = _jsonl(tmp_path / "pairs.jsonl", ['{"prompt": "a", "answer": "b"}'])
    assert export_command.main([*args, "--data", str(data), "--warmup_ratio", "2"]) == 2
    assert "SFTConfig.warmup_ratio=2.0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        export_command.main(["axolotl", "--data", str(data), "--out", str(tmp_path)])
    assert exit_info.value.code == 2


def test_read_examples_counts_blank_lines_in_line_numbers(tmp_path: Path) -> None:
    data = _jsonl(tmp_path / "pairs.jsonl",
                  ['{"prompt": "a", "answer": "b"}', "", '{"prompt": "c", "answer": "d"}'])
    assert [e["answer"] for e in read_examples(data)] == ["b", "d"]
