# iv2: two commands set up a fresh machine.
#   make test   install (if needed), check iv2/ is what nbs/ exports, run every notebook's tests and tests/
#   make demo   install (if needed), run the main job on the embedded default (world -> teachers -> stage 1 -> stage 2 -> VidCap -> LLM warm-up -> stage 3), render reports/
#   make reproduce PRESET=tiny|small   every run notebook (stages, evaluations, ablations) on that world, then reports/
#   make reports  re-render reports/ from the newest finished run of each report under runs/ (nothing is re-run)
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PYTHONHASHSEED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# DeepSpeed JIT-compiles its C++ ops once per machine; keep them in the project's ignored cache
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions

.PHONY: install system-deps test export check-export nbtest pytest demo reproduce reports lab clean-nbs

install: $(STAMP)

$(STAMP): settings.ini setup.py
	command -v espeak-ng >/dev/null && command -v chromium >/dev/null && [ -d /usr/share/pocketsphinx/test/data/librivox ] || $(MAKE) system-deps
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU build on local disk (never let a dependency pull a CUDA build).
	$(BIN)/pip install -q torch==2.13.0
	# DeepSpeed without pre-built ops (they are JIT-built on first use, into TORCH_EXTENSIONS_DIR below)
	DS_BUILD_OPS=0 $(BIN)/pip install -q --no-build-isolation deepspeed==0.19.8
	$(BIN)/pip install -q -e ".[dev]"
	# the project's kernel, inside the venv (papermill, nbdev_test and JupyterLab use it)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (iv2)" >/dev/null
	touch $@

system-deps:  ## Debian packages: espeak-ng (real synthesized speech for the synthetic world), pocketsphinx-testdata (real speech with transcripts: VidCap's WER), chromium (the reports' browser test)
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq espeak-ng pocketsphinx-testdata chromium >/dev/null

export: install
	$(BIN)/nbdev_export

check-export: install  ## fail if iv2/ differs from what the notebooks export
	@tmp=$$(mktemp -d)
	cp -r nbs settings.ini $$tmp/
	[ -d iv2 ] && cp -r iv2 $$tmp/iv2.committed || mkdir $$tmp/iv2.committed
	(cd $$tmp && $(BIN)/nbdev_export)
	if ! diff -r -x __pycache__ -x '*.pyc' $$tmp/iv2.committed $$tmp/iv2; then
	  echo "iv2/ is out of date with nbs/: run 'make export' and commit iv2/ (never edit iv2/ by hand)" >&2; rm -rf $$tmp; exit 1
	fi
	rm -rf $$tmp

# one torch thread per notebook worker: two workers x two threads on two cores make every parallel op wait for a
# descheduled thread (measured: a tiny stage-1 step takes 0.06 s alone and 4.5 s beside another torch process)
# The tests' scratch (the notebooks' tempfile.mkdtemp folders, 1.0 GiB at peak; pytest's tmp_path with the run
# notebooks' checkpoints, 7.3 GiB at peak; measured 2026-11-28) lives in one folder per target that is removed when the target ends, passed or failed, so a
# test run leaves nothing in /tmp (a CI run once failed with 'No space left on device' on a machine full of them)
nbtest: install
	scratch=$$(mktemp -d -t iv2-nbtest-XXXXXX); trap 'rm -rf "$$scratch"' EXIT
	TMPDIR=$$scratch OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing

pytest: install
	scratch=$$(mktemp -d -t iv2-pytest-XXXXXX); trap 'rm -rf "$$scratch"' EXIT
	TMPDIR=$$scratch $(BIN)/python -m pytest -q --basetemp "$$scratch/pytest" tests

test: check-export nbtest pytest

demo: install  ## the embedded default at the tiny preset: the world, its teachers, stage 1, stage 2, VidCap, the LLM warm-up, stage 3 -> reports/
	$(BIN)/iv2 run synth_world -p preset tiny
	$(BIN)/iv2 run teachers -p preset tiny
	$(BIN)/iv2 run stage1 -p preset tiny
	# stage 2 from the two stage-1 students and from random init: 4 models x 100 steps (about 12 minutes on 2 cores)
	$(BIN)/iv2 run stage2 -p preset tiny -p steps 100
	# VidCap: the learned shot detector trained on the world's transitions, then clips, five captions (Whisper for speech), manifest, data card
	$(BIN)/iv2 run vidcap_shots -p steps 300
	$(BIN)/iv2 run vidcap
	# the tiny LLM's text warm-up, the stand-in for VideoChat2's pretrained chat LLM (about 10 minutes; 8000 steps by default)
	$(BIN)/iv2 run llm_warmup -p steps 2000
	# stage 3: a QFormer and the warmed-up LLM on the stage-2 encoder and on a random one, MVBench-style questions and chat (about 5 minutes)
	$(BIN)/iv2 run stage3 -p steps 150 -p seeds 0 -p llm warmup

# ---- reproduce: every run notebook on one world preset, through papermill, then reports/ ----
# PRESET=tiny: the 300-clip world, 2 seeds for the stages, 1 seed and fewer steps for the ablation grids;
# PRESET=small: the 3000-clip world, every notebook at its defaults (2 seeds). Models stay at the tiny preset on CPU.
PRESET ?= tiny
ifeq ($(PRESET),tiny)
  S2_STEPS := 100
  S3_ARGS  := -p steps 150
  WARM_ARGS := -p steps 2000
  ABL_ARGS := -p steps 100 -p seeds 0
else ifeq ($(PRESET),small)
  S2_STEPS := 300
  S3_ARGS  := -p steps 400
  WARM_ARGS :=
  ABL_ARGS :=
else
  $(error PRESET must be tiny or small, got '$(PRESET)')
endif
W := -p world_preset $(PRESET)

# RESUME=1 goes on with the last reproduction of this preset instead of starting a new one: a step whose run finished
# since that reproduction started (the time is kept in runs/reproduce-<preset>.since), with the same parameters, is
# reused, not run again; an interrupted step runs again, except that an interrupted ablation grid goes on in a new run
# that reuses the points it finished. A reproduction longer than a sitting is done in several, and `iv2 runs --since`
# (printed at the end) sums the wall times its runs measured.
reproduce: install  ## PRESET=tiny|small [RESUME=1]: world -> teachers -> stage 1 -> stage 2 -> LLM warm-up -> stage 3 -> evaluations -> VidCap -> ablations -> reports/
	since_file=runs/reproduce-$(PRESET).since
	if [ -z "$(RESUME)" ] || [ ! -s "$$since_file" ]; then mkdir -p runs; date +%Y-%m-%dT%H:%M:%S > "$$since_file"; fi
	since=$$(cat "$$since_file"); echo "reproduction PRESET=$(PRESET) started $$since"
	run="$(BIN)/iv2 run --resume-since $$since"
	$$run synth_world -p preset $(PRESET)
	# the tiny teachers (56 px, the tiny student's grid) on the preset's world
	$$run teachers $(W)
	$$run stage1 $(W)
	$$run stage2 $(W) -p steps $(S2_STEPS)
	$$run stage2 $(W) -p preset tiny_av -p modalities vt,at -p seeds 0 -p random_init_control False -p steps $(S2_STEPS) --run-name stage2_av
	$$run llm_warmup $(W) $(WARM_ARGS)
	$$run stage3 $(W) $(S3_ARGS) -p llm warmup
	$$run eval_action $(W)
	# the learnability control: the labels learned directly, from scratch, by the tiny ViT and a small 3D CNN
	$$run ceiling $(W)
	# the tiny ViT has 4 blocks: features of block -2 (the paper's 7th from the last, of 40 blocks, needs 7 or more);
	# the encoder of the newest finished stage-2 run (an interrupted one has no run.json)
	$$run features $(W) -p encoder_dir stage2 -p layer -2
	$$run vidcap_shots $(W)
	$$run vidcap $(W)
	$$run ablation_teachers -p worlds $(PRESET) -p probe_world $(PRESET) $(ABL_ARGS)
	$$run ablation_stage2 -p table 17 $(W) $(ABL_ARGS)
	$$run ablation_stage2 -p table 18 $(W) $(ABL_ARGS) --run-name ablation_stage2_t18
	$$run ablation_stage3 $(W) $(ABL_ARGS)
	$(MAKE) bench BENCH_ARGS="--resume-since $$since"
	$$run throughput $(W)
	$$run memory_plan
	$(BIN)/iv2 report --all
	$(BIN)/iv2 runs --since "$$since"

reports: install  ## re-render reports/ from the newest finished run of each report under runs/ (nothing is re-run)
	$(BIN)/iv2 report --all

lab: install
	$(BIN)/jupyter lab --notebook-dir=nbs $(if $(SUDO),,--allow-root)

clean-nbs: install
	$(BIN)/nbdev_clean

# ---- benchmark: iv2's video ViT against timm's VisionTransformer (nbs/15_bench.ipynb, nbs/runs/bench_vit.ipynb) ----
# timm imports torchvision, and PyPI's torchvision does not import beside .venv's CPU torch 2.13.0, so the timm side runs
# in a separate venv with the machine's torch 2.14.1 + torchvision 0.29.1 (from local disk; a CUDA build that runs on
# the CPU). .venv is never touched; iv2 goes into .venv-bench without its dependencies (it needs torch, numpy, PyYAML).
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_ARGS  ?=
.PHONY: bench-venv bench

bench-venv: $(BENCH_STAMP)

$(BENCH_STAMP): settings.ini setup.py
	[ -x $(BENCH_VENV)/bin/python ] || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BENCH_VENV)/bin/pip install -q timm==1.0.31 numpy==2.4.6 PyYAML==6.0.3 torch==2.14.1 torchvision==0.29.1
	$(BENCH_VENV)/bin/pip install -q --no-deps -e .
	touch $@

bench: install bench-venv  ## iv2 vs timm ViT forward+backward throughput and the 80%-masked cost -> reports/bench_vit.*
	$(BIN)/iv2 run bench_vit $(BENCH_ARGS)
