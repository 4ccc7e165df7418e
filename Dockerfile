# hybrid_search on the official PostgreSQL image, installed by the same
# `hybrid-search setup` that CI runs on bare Debian: no second recipe.
#   docker build -t hybrid-search .                         # real BGE-M3 (downloaded at build)
#   docker build -t hybrid-search --build-arg MODEL=test .  # tiny random test model
#   docker run -e POSTGRES_PASSWORD=... -p 5432:5432 hybrid-search
FROM postgres:15-bookworm

ARG MODEL=BAAI/bge-m3
# the image has no local CPU wheel of torch; this index keeps CUDA out
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV HYBRID_SEARCH_HOME=/opt/hybrid_search \
    HYBRID_SEARCH_TORCH_INDEX_URL=${TORCH_INDEX_URL}

# only what runs the installer; it installs everything else itself
RUN apt-get update \
    && apt-get install -y --no-install-recommends make python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

COPY . /opt/hybrid_search/src
WORKDIR /opt/hybrid_search/src

RUN make .venv/bin/hybrid-search \
    && if [ "$MODEL" = test ]; then \
         .venv/bin/hybrid-search setup --test-model; \
       else \
         .venv/bin/hybrid-search setup --model "$MODEL"; \
       fi \
    && .venv/bin/hybrid-search init-sql > /docker-entrypoint-initdb.d/50-hybrid-search.sql \
    && rm -rf /var/lib/apt/lists/* /opt/hybrid_search/build /root/.cache

# every backend shares the model stack the postmaster imports (README: Preloading)
CMD ["postgres", "-c", "shared_preload_libraries=hybrid_search", "-c", "hybrid_search.preload_venv=/opt/hybrid_search/venv"]
