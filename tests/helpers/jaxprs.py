"""What a traced function is made of: the primitive names of its jaxpr, inner jaxprs included."""

from __future__ import annotations

import jax
import jax.extend


def primitive_names(f, *args) -> list[str]:
    """The primitive names of ``f``'s jaxpr at ``args``, those of inner jaxprs (custom rules, pjit, cond
    branches, layers' custom_vjp / custom_vmap calls) included, once per application."""
    names = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.append(eqn.primitive.name)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)
    walk(jax.make_jaxpr(f)(*args).jaxpr)
    return names
