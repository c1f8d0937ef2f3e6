"""pneumo as a hospital node: a DICOM Storage SCP that analyses what it receives and C-STOREs the results to
a PACS (``scp``), and a DICOMweb client that polls a PACS (``dicomweb``). Both send the SR, secondary capture
and presentation state of ``pneumo.dicom_out`` and keep unsent results on disk (``queue``)."""
