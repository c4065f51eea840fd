# SPDX-License-Identifier: Apache-2.0
# bash completion for byokctl
_byokctl() {
    local cur prev words cword
    _init_completion || return
    local commands="status watch health wait check-config kmip version"
    case $prev in
        --socket) _filedir sock; return ;;
        check-config) _filedir toml; return ;;
        --timeout|--host|--client|--server-owner|--client-owner) return ;;
        --dir) _filedir -d; return ;;
    esac
    local i cmd=
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            status|watch|health|wait|check-config|kmip|version) cmd=${words[i]}; break ;;
        esac
    done
    case $cmd in
        "") COMPREPLY=($(compgen -W "--socket $commands" -- "$cur")) ;;
        status|watch) COMPREPLY=($(compgen -W "--json" -- "$cur")) ;;
        wait) COMPREPLY=($(compgen -W "--unlocked --timeout" -- "$cur")) ;;
        kmip)
            case " ${words[*]} " in
                *" init "*) COMPREPLY=($(compgen -W "--dir --host --client --server-owner --client-owner" -- "$cur")) ;;
                *" add-client "*) COMPREPLY=($(compgen -W "--dir --client-owner" -- "$cur")) ;;
                *) COMPREPLY=($(compgen -W "init add-client" -- "$cur")) ;;
            esac ;;
    esac
} && complete -F _byokctl byokctl
