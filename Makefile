# `make demo` and `make test` each create .venv when it is missing, install splitcv into it, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Trains an eighth-width compressor on scikit-image's bundled photos (CPU, ~7 min), then codes the
# held-out photos at iterations 1..T beside JPEG and WebP at the nearest bpp: table + plot in runs/.
demo: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} $(PY) train.py fit --config configs/trainer/cpu.yaml \
		--config configs/rnn_compressor/demo.yaml --run.id demo
	$(PY) -m benchmarks.rate_distortion --checkpoint runs/rnn_compressor_demo/demo/checkpoints/last.ckpt \
		--out runs/rnn_compressor_demo/demo/rate_distortion

test: $(STAMP)
	WANDB_MODE=disabled $(PY) -m pytest -q --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs .pytest_cache
