# The Debian package (issue 18): where `cmake --install` puts the configs, units, profiles,
# schemas and documents, and CPack's DEB settings. `./sanigate.sh package` builds it (a build dir
# of its own with Debian's hardening flags, then `cpack -G DEB`); packaging/README.md says what
# the package installs and how it behaves. The three executables have their own install() rules
# (gateway/, fleet/, fleet/ctl/): bin/ below the prefix, /usr/bin in the package.
include_guard(GLOBAL)

set(SANIGATE_PKG_SRC ${PROJECT_SOURCE_DIR}/packaging)
set(SANIGATE_PKG_GEN ${PROJECT_BINARY_DIR}/packaging)

option(SANIGATE_PACKAGING "Configuring the package build (./sanigate.sh package): stricter checks" OFF)

# A sample of config/ turned into the box's config: each OLD text replaced by NEW. A sample that
# no longer contains OLD stops the package build (a warning elsewhere), so the package never
# ships a config that silently lost its MQTT user or password file.
function(sanigate_box_config in out)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${in})
  file(READ ${in} text)
  set(pairs ${ARGN})
  while(pairs)
    list(POP_FRONT pairs old new)
    string(FIND "${text}" "${old}" at)
    if(at EQUAL -1)
      set(level WARNING)
      if(SANIGATE_PACKAGING)
        set(level FATAL_ERROR)
      endif()
      message(${level} "packaging: ${in} no longer contains \"${old}\": update packaging/package.cmake")
    endif()
    string(REPLACE "${old}" "${new}" text "${text}")
  endwhile()
  set(before "")
  if(EXISTS ${out})
    file(READ ${out} before)
  endif()
  if(NOT before STREQUAL text)
    file(WRITE ${out} "${text}")
  endif()
endfunction()

# The daemons run as dynamic users: systemd hands each its root-only password file
# (/etc/sanigate/credentials/{user}.password, made by the postinst) as the credential
# mqtt.password (LoadCredential= in the units), readable by the service only while it runs.
sanigate_box_config(${PROJECT_SOURCE_DIR}/config/sanigate.toml ${SANIGATE_PKG_GEN}/etc/sanigate.toml
  "# username = \"gateway\"" "username = \"gateway\""
  "# password_file = \"/etc/sanigate/mqtt.password\""
  "## From the package: systemd hands the service the broker password the package made
## (/etc/sanigate/credentials/gateway.password, root only) here while it runs.
password_file = \"/run/credentials/sanigate.service/mqtt.password\"")
sanigate_box_config(${PROJECT_SOURCE_DIR}/config/sanifleet.toml ${SANIGATE_PKG_GEN}/etc/sanifleet.toml
  "[mqtt]\nurl = \"tcp://127.0.0.1:1883\"\n"
  "[mqtt]\nurl = \"tcp://127.0.0.1:1883\"
username = \"fleet\"
## From the package: systemd hands the service the broker password the package made
## (/etc/sanigate/credentials/fleet.password, root only) here while it runs.
password_file = \"/run/credentials/sanifleet.service/mqtt.password\"\n")
# sanictl run as root on the box: the admin user and its password file.
sanigate_box_config(${PROJECT_SOURCE_DIR}/fleet/ctl/sanictl.example.toml ${SANIGATE_PKG_GEN}/etc/sanictl.toml
  "# username = \"admin\"" "username = \"admin\""
  "# password_file = \"/etc/sanigate/admin.password\""
  "password_file = \"/etc/sanigate/credentials/admin.password\"")

# Documents: the changelog and the man pages compressed as Debian wants them (gzip -9, no name
# or time stamp, so the same sources give the same bytes).
find_program(SANIGATE_GZIP gzip REQUIRED)
file(STRINGS ${SANIGATE_PKG_SRC}/changelog SANIGATE_PKG_CHANGELOG_TOP LIMIT_COUNT 1)
if(NOT SANIGATE_PKG_CHANGELOG_TOP MATCHES "^sanigate \\(${PROJECT_VERSION}-")
  message(WARNING "packaging/changelog starts with \"${SANIGATE_PKG_CHANGELOG_TOP}\": "
                  "add an entry for ${PROJECT_VERSION} (the package's version)")
endif()
set(SANIGATE_PKG_MAN sanigate.8 sanifleet.8 sanictl.1)
foreach(doc changelog ${SANIGATE_PKG_MAN})
  set(src ${SANIGATE_PKG_SRC}/${doc})
  if(doc MATCHES "\\.[18]$")
    # The man pages carry the version (@PROJECT_VERSION@).
    configure_file(${SANIGATE_PKG_SRC}/man/${doc} ${SANIGATE_PKG_GEN}/man/${doc} @ONLY)
    set(src ${SANIGATE_PKG_GEN}/man/${doc})
  else()
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${src})
  endif()
  execute_process(COMMAND ${SANIGATE_GZIP} -9nc ${src} OUTPUT_FILE ${SANIGATE_PKG_GEN}/${doc}.gz
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "packaging: cannot compress ${src}")
  endif()
endforeach()

# --- What is installed where (absolute paths for what the system reads from fixed places). ---
set(CMAKE_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS
    OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)

# Configs, all conffiles (packaging/deb/conffiles): an upgrade keeps what the operator edited.
install(FILES ${SANIGATE_PKG_GEN}/etc/sanigate.toml ${SANIGATE_PKG_GEN}/etc/sanifleet.toml
              ${SANIGATE_PKG_GEN}/etc/sanictl.toml
        DESTINATION /etc/sanigate)
# Profiles an operator adds or overrides (the shipped ones are in /usr/share/sanigate/profiles).
install(DIRECTORY DESTINATION /etc/sanigate/profiles)
# The local broker: a drop-in Debian's mosquitto.conf includes, the ACL beside the password file
# the postinst makes (/etc/sanigate/mosquitto/passwd).
install(FILES ${SANIGATE_PKG_SRC}/mosquitto.conf DESTINATION /etc/mosquitto/conf.d RENAME sanigate.conf)
install(FILES ${SANIGATE_PKG_SRC}/sanigate.acl DESTINATION /etc/sanigate/mosquitto)
install(FILES ${SANIGATE_PKG_SRC}/sanigate.service ${SANIGATE_PKG_SRC}/sanifleet.service
        DESTINATION /lib/systemd/system)

# Read-only data: device profiles and the JSON Schemas of the MQTT model.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/config/profiles/ DESTINATION share/sanigate/profiles
        FILES_MATCHING PATTERN "*.toml")
install(DIRECTORY ${PROJECT_SOURCE_DIR}/config/schema/ DESTINATION share/sanigate/schema
        FILES_MATCHING PATTERN "*.json")

# Documents: the README, the package's own notes (README.Debian), the commented samples of the
# adapter sections.
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${SANIGATE_PKG_SRC}/copyright DESTINATION share/doc/sanigate)
install(FILES ${SANIGATE_PKG_GEN}/changelog.gz DESTINATION share/doc/sanigate RENAME changelog.Debian.gz)
install(FILES ${SANIGATE_PKG_SRC}/README.md DESTINATION share/doc/sanigate RENAME README.Debian)
install(FILES ${PROJECT_SOURCE_DIR}/config/modbus.toml ${PROJECT_SOURCE_DIR}/config/lorawan.toml
              ${PROJECT_SOURCE_DIR}/config/jt808.toml ${PROJECT_SOURCE_DIR}/config/nmea.toml
              ${PROJECT_SOURCE_DIR}/config/upstream.toml
        DESTINATION share/doc/sanigate/examples)
# Where the README's links lead: the metric vocabulary, the fleet manager and sanictl.
install(FILES ${PROJECT_SOURCE_DIR}/config/schema/README.md DESTINATION share/doc/sanigate/config/schema)
install(FILES ${PROJECT_SOURCE_DIR}/fleet/README.md DESTINATION share/doc/sanigate/fleet)
install(FILES ${PROJECT_SOURCE_DIR}/fleet/ctl/README.md DESTINATION share/doc/sanigate/fleet/ctl)
install(FILES ${SANIGATE_PKG_GEN}/sanigate.8.gz ${SANIGATE_PKG_GEN}/sanifleet.8.gz DESTINATION share/man/man8)
install(FILES ${SANIGATE_PKG_GEN}/sanictl.1.gz DESTINATION share/man/man1)
# lintian tags that are false positives or deliberate (each explained in packaging/README.md).
install(FILES ${SANIGATE_PKG_SRC}/deb/lintian-overrides DESTINATION share/lintian/overrides RENAME sanigate)

# A stripped install (CPack: CPACK_STRIP_FILES) also drops the compiler's .comment and .note
# sections, as Debian's dh_strip does. Runs after the executables' own install rules.
install(CODE "
  if(CMAKE_INSTALL_DO_STRIP)
    foreach(exe sanigate sanifleet sanictl)
      execute_process(COMMAND \"${CMAKE_OBJCOPY}\" --remove-section=.comment --remove-section=.note
                              \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/bin/\${exe}\" RESULT_VARIABLE rc)
      if(NOT rc EQUAL 0)
        message(FATAL_ERROR \"objcopy failed on \${exe}\")
      endif()
    endforeach()
  endif()")

# --- CPack: one .deb, sanigate_{version}-{release}_{arch}.deb. ---
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME sanigate)
set(CPACK_PACKAGE_VENDOR "Sanigate")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(SANIGATE_DEB_RELEASE 1 CACHE STRING "Debian revision of the package (the part after the '-')")
set(SANIGATE_DEB_MAINTAINER "Sanigate maintainers <maintainers@users.noreply.h-seed-385b2944.example>"
    CACHE STRING "Maintainer field of the package")
set(CPACK_DEBIAN_PACKAGE_RELEASE ${SANIGATE_DEB_RELEASE})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER ${SANIGATE_DEB_MAINTAINER})
set(CPACK_PACKAGE_CONTACT ${SANIGATE_DEB_MAINTAINER})
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "edge gateway for city sanitation devices")
# The synopsis is CPACK_PACKAGE_DESCRIPTION_SUMMARY; CPack indents these lines and turns the
# empty one into " .".
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "Sanigate reads garbage-room controllers (Modbus TCP and RTU), LoRaWAN bin
monitors and truck terminals (JT/T 808, NMEA), turns every value into one
normalized MQTT model and keeps every record in a durable outbox until the
broker has acknowledged it.

This package holds the gateway daemon (sanigate), the fleet manager
(sanifleet: device registry and health, heat map, firmware rollouts) and the
admin CLI (sanictl), their systemd units, and the configuration of the local
Mosquitto broker with one MQTT user per role.")
# Shared libraries found by dpkg-shlibdeps, the broker (its mosquitto_passwd makes the users) and
# procps, whose /bin/kill the units' ExecReload runs (a minimal Debian root lacks it).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "mosquitto, procps")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${SANIGATE_PKG_SRC}/deb/conffiles ${SANIGATE_PKG_SRC}/deb/postinst
    ${SANIGATE_PKG_SRC}/deb/prerm ${SANIGATE_PKG_SRC}/deb/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
