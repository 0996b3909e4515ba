"""The parts of the fleet simulator (:mod:`rapidloop.tools.simulator` is its front door).

``params`` what shapes a world · ``catalog`` tenants, software, malware
families · ``campaigns`` how campaigns spread · ``rogues`` tenants that lie ·
``sensors`` what sensors report · ``verdicts`` sandbox and analyst verdicts ·
``dirt`` malformed lines · ``events`` what is emitted · ``output`` files.
"""
