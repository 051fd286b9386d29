"""Render one stamp bank: heuristic masks through a GAN checkpoint ({ckpt}) or the classic renderer."""

from billetjax.utils import log_to

log_to(snakemake.log[0])

from billetjax.synth.pool import make_bank  # noqa: E402

checkpoint = int(snakemake.wildcards.ckpt) if "ckpt" in snakemake.wildcards.keys() else None
if checkpoint is not None:
    from billetjax.utils import enable_jax_cache

    enable_jax_cache()
make_bank(
    snakemake.params.config,
    "gan" if checkpoint is not None else "classic",
    snakemake.output[0],
    snakemake.params.stamp["size_px"],
    snakemake.params.stamp["margin"],
    checkpoint=checkpoint,
    generator_path=snakemake.input.get("generator"),
    # Masks are made in worker processes only where JAX is not loaded (forking it is unsafe).
    workers=1 if checkpoint is not None else snakemake.threads,
)
