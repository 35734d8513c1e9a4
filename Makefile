# `make demo` and `make test` each create .venv when it is missing, install splitcv into it, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install lint clean

$(STAMP): pyproject.toml setup.py models/bitserial_native.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Trains an eighth-width compressor on scikit-image's bundled photos (CPU, 7–13 min: 7 min 4 s and 12 min 45 s measured on the
# 2-core machine; see the README), then codes the held-out photos at iterations 1..T beside JPEG and WebP at the nearest
# bpp: table + plot in runs/rnn_compressor_demo/$(DEMO_ID)/rate_distortion/.
# A run is never trained over: a finished demo is kept and reported (train another with DEMO_ID=name); an
# interrupted one continues from its last checkpoint. DEMO_ARGS are added to the fit (e.g. a shorter run:
# DEMO_ARGS="--trainer.max_epochs 2").
DEMO_ID ?= demo
DEMO_ARGS ?=
DEMO_RUN := runs/rnn_compressor_demo/$(DEMO_ID)
DEMO_RESULTS := $(DEMO_RUN)/rate_distortion/rate_distortion.json

demo: $(STAMP)
	@if [ -f $(DEMO_RESULTS) ]; then \
		echo "make demo: $(DEMO_RUN) is a finished demo and is kept (table and plot in $(DEMO_RUN)/rate_distortion/)."; \
		echo "make demo: to train another beside it: make demo DEMO_ID=demo2"; \
	else \
		set -ex; \
		WANDB_MODE=$${WANDB_MODE:-offline} $(PY) train.py fit --config configs/trainer/cpu.yaml \
			--config configs/rnn_compressor/demo.yaml --run.id $(DEMO_ID) \
			$(if $(wildcard $(DEMO_RUN)/checkpoints/last.ckpt $(DEMO_RUN)/hpc_ckpt_*.ckpt),--ckpt_path last) $(DEMO_ARGS); \
		$(PY) -m benchmarks.rate_distortion --checkpoint $(DEMO_RUN)/checkpoints/last.ckpt \
			--out $(DEMO_RUN)/rate_distortion; \
	fi

test: $(STAMP)
	WANDB_MODE=disabled $(PY) -m pytest -q --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs .pytest_cache
