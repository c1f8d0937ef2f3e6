"""pneumo: decision support for pneumonia on chest radiographs (RSNA Pneumonia Detection Challenge task).

Output of this package is decision support for qualified clinicians, never a diagnosis.
"""

__version__ = "0.1.0"

DISCLAIMER = (
    "Decision support only, not a diagnosis: a qualified clinician must review the image and this output."
)
