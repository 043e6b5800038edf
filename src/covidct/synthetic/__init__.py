"""Synthetic chest CT: phantoms with class-specific lesions and whole cohorts written to disk."""

from covidct.synthetic.cohort import make_cohort, nifti_affine, write_nifti_array
from covidct.synthetic.phantom import Phantom, add_lesion, make_phantom

__all__ = ["Phantom", "add_lesion", "make_cohort", "make_phantom", "nifti_affine", "write_nifti_array"]
